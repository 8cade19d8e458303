"""The pretraining loop, its schedules, checkpoints and distributed set-up."""
