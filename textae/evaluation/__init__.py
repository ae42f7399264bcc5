"""Judging a model (torch-free): reconstruction, STS, probes, anomaly AUROC, and maps of the vectors.

    readers.py         the evaluation files (text, score<TAB>s1<TAB>s2, label<TAB>text)
    metrics.py         rankdata, spearman, auroc, row_cosines (numpy)
    reconstruction.py  token accuracy, exact match and chrF by length
    similarity.py      STS: Spearman of cosine similarities
    probes.py          logistic-regression probes on frozen vectors
    anomalies.py       AUROC of the anomaly score
    report.py          the report as JSON or rich tables
    evaluate.py        `textae evaluate`: check every input, then run the evaluations asked for
    maps.py            `textae map`: a 2-D picture of the vectors
    settings.py        the options of `textae similar` and `textae map`, as dataclasses
"""
