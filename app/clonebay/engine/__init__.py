"""UI-agnostic jobs: plan, pipeline, clone/save/restore/verify."""
