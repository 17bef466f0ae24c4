"""What breaks and how we know: Chaos Toolkit inject/revert pairs, experiments, the doctor, the CLI."""
