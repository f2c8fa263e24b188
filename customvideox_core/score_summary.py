"""The score summary's names, shared by the score node and the batch client (no torch, no ComfyUI).

``CustomVideoXScore`` puts its summary in its UI output under :data:`SCORE_UI_KEY` (so it lands in
the API's ``/history``); the batch client reads it from there. The summary's measures are
:data:`METRICS`, labelled as in the paper by :data:`METRIC_LABELS`, then FaceSim and motion; all of them
are :data:`SUMMARY_METRICS`.
"""

SCORE_UI_KEY = "cvx_scores"
METRIC_LABELS = {"clip_i": "CLIP-I", "dino_i": "DINO-I", "t_cons": "T.Cons", "clip_t": "CLIP-T"}
"""The metric table: name (also the :class:`~customvideox_core.metrics.scoring.VideoScores` field of its
per-frame values) → label, in the order the summaries list them."""
METRICS = tuple(METRIC_LABELS)
FACE_LABELS = {"face_sim": "FaceSim", "face_sim_min": "FaceSim min", "face_detected": "Face found"}
"""FaceSim (``docs/METRICS.md``): the mean and minimum over frames with a face, and the share of such frames."""
MOTION_LABELS = {"motion": "Motion", "motion_subject": "Motion (subject)"}
"""Motion in percent of the frame's short side per scored step (``docs/METRICS.md``); not a cosine."""
SUMMARY_LABELS = {**METRIC_LABELS, **FACE_LABELS, **MOTION_LABELS}
SUMMARY_METRICS = tuple(SUMMARY_LABELS)
"""Every number at the top of a summary, in the order the node's outputs and the batch tables list them."""
MOTION_METRICS = tuple(MOTION_LABELS)
