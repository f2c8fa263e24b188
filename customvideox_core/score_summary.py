"""The score summary's names, shared by the score node and the batch client (no torch, no ComfyUI).

``CustomVideoXScore`` puts its summary in its UI output under :data:`SCORE_UI_KEY` (so it lands in
the API's ``/history``); the batch client reads it from there. The summary's measures are
:data:`METRICS`, labelled as in the paper by :data:`METRIC_LABELS`.
"""

SCORE_UI_KEY = "cvx_scores"
METRIC_LABELS = {"clip_i": "CLIP-I", "dino_i": "DINO-I", "t_cons": "T.Cons", "clip_t": "CLIP-T"}
"""The metric table: name (also the :class:`~customvideox_core.metrics.scoring.VideoScores` field of its
per-frame values) → label, in the order the summaries list them."""
METRICS = tuple(METRIC_LABELS)
