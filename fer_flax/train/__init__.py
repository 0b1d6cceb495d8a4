"""Training: the loop, its compiled steps, the optimizer, the run plan and time budget,
checkpoints, metric writers, the clock, preemption, several processes, evaluation and the TPU
compile check. Imports models, data and core."""
