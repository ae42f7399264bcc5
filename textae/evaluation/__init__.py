"""Judging a model (torch-free): reconstruction, STS, probes, anomaly AUROC, and maps of the vectors."""
