"""iBOT pretraining with attention-guided masks, as a method on the training engine: its
config, meta-architecture (student, EMA teacher, masks, loss terms), schedules, data, checks
and the entry point ``run_pretraining``."""
