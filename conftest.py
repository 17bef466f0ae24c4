"""Only wires plugins: the knetcheck pytest plugin is registered by its pytest11 entry point
(``suites.plugin``); pytester is needed by the plugin's own tests."""

pytest_plugins = ["pytester"]
