"""An existing cluster reached through a kubeconfig: attached to, checked, never created or deleted."""
