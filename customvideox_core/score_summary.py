"""The score summary's names, shared by the score node and the batch client (no torch, no ComfyUI).

``CustomVideoXScore`` puts its summary in its UI output under :data:`SCORE_UI_KEY` (so it lands in
the API's ``/history``); the batch client reads it from there. The summary's measures are
:data:`METRICS`, labelled as in the paper by :data:`METRIC_LABELS`.
"""

SCORE_UI_KEY = "cvx_scores"
METRICS = ("clip_i", "dino_i", "t_cons", "clip_t")
METRIC_LABELS = {"clip_i": "CLIP-I", "dino_i": "DINO-I", "t_cons": "T.Cons", "clip_t": "CLIP-T"}
