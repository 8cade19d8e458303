"""Sub-commands of the ``mimkit`` CLI, one module each."""
