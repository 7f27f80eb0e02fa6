"""Training: the loop (`train`), its options and checkpointed state, the loss, optimizers and LR
policies, the metric log, clean stops, dev evaluation, and the throughput and stability tools."""
