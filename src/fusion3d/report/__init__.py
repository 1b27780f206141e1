"""What a reader of the study sees: the figures (:mod:`~fusion3d.report.figures`), the
paper's Table 1 beside ours (:mod:`~fusion3d.report.paper`), one viewer page per subject
(:mod:`~fusion3d.report.viewer`) and the report's front page
(:mod:`~fusion3d.report.frontpage`)."""
