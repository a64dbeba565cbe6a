"""The pyinfra deploy's planning: validated inventory, facts, the host's state merge,
the GPU and Python decisions, the wheel, and the local target. Runs on the controller."""
