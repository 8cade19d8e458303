"""The training engine every method runs on (iBOT pretraining in ``mimkit.ibot``, fine-tuning
in ``mimkit.finetune``): the loop, the method protocol, checkpoints with roll-back, AMP,
distributed set-up, signals, logs, compile and the resumable data plumbing."""
