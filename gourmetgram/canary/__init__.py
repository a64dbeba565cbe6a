"""The canary: weighted routing in Nginx (ship, set, promote, rollback), the statistical
analysis of a canary against production, and the controller that steps a rollout."""
