"""Where Ray meets the library: the stages, resource planning, the pipeline and its summary."""
