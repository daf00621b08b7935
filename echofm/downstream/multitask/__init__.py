"""Multi-task fine-tuning: one encoder pass, one head per task, trained and served together.

`config` (the options, torch-free), `balancing` (how task losses become one), `data` (the
clips labelled for any of the tasks, each task's labels and split), `model` (`MultiTaskModel`
and its checkpoint), `train` (`finetune_multitask`: the joint model against single-task models
and a random encoder).
"""
