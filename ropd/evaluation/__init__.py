"""Evaluation of a student, and the quality of the reward.

- `eval`: generation, accuracy and pass@k (`ropd eval`); `suites`: the papers' evaluation suites;
- `quality`: how well rewards separate right from wrong answers (ROC-AUC, pairwise accuracy);
- `judge_eval_set`, `judge_eval`: `ropd judge-eval`: a labelled set of answers, and each judging setup measured on it.
"""

__all__ = ["eval", "judge_eval", "judge_eval_set", "quality", "suites"]
