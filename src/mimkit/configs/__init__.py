"""YAML configs shipped with mimkit (one per data set x model)."""
