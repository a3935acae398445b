"""A leaderboard that answers "do we need AI here?": classical features, linear probes on frozen
offline backbones, fine-tuned backbones, the anomaly detector and a stacked ensemble, trained on
the same split within one time budget, each tracked as an MLflow run, scored with
`visionline.evaluate`'s thresholds and intervals, and ranked."""

from visionline.leaderboard._budget import Budget, OutOfBudget
from visionline.leaderboard._config import Family, LeaderboardConfig, load_leaderboard_config
from visionline.leaderboard._data import LeaderboardData, load_data
from visionline.leaderboard._entry import Entry, Outcome
from visionline.leaderboard._features import classical_features, image_features
from visionline.leaderboard._run import LeaderboardResult, plan, run_leaderboard
from visionline.leaderboard._scoring import no_ml_needed, ranked, verdict

__all__ = [
    "Budget",
    "Entry",
    "Family",
    "LeaderboardConfig",
    "LeaderboardData",
    "LeaderboardResult",
    "OutOfBudget",
    "Outcome",
    "classical_features",
    "image_features",
    "load_data",
    "load_leaderboard_config",
    "no_ml_needed",
    "plan",
    "ranked",
    "run_leaderboard",
    "verdict",
]
