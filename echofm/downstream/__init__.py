"""Downstream models on the pretrained encoder: labels, patient splits, task data, fine-tuning, evaluation."""
