"""Host state and rendering: the inventory's data model, every on-host path, the one
render function and the renders of host files, and the deploy's three-way state merge."""
