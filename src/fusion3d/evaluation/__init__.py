"""The evaluation stage: scoring every fused image (:mod:`~fusion3d.evaluation.scoring`),
the long metric table (:mod:`~fusion3d.evaluation.long_table`), Table 1
(:mod:`~fusion3d.evaluation.tables`) and paired statistics
(:mod:`~fusion3d.evaluation.statistics`). Import from the submodules: this file imports
nothing, so that a light module (e.g. the shard paths of the pass) costs no metric code."""
