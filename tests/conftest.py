import os

# Qt tests never need a display.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def fail_steps(monkeypatch, error: BaseException, *, at: int, after: bool = False) -> None:
    """Make ``Trainer.step`` raise ``error`` at iteration ``at`` (and at every one after it,
    with ``after``), as running out of memory or a bug of ours would."""
    from engine.trainer import Trainer

    real_step = Trainer.step

    def failing(self: Trainer):  # the name a traceback shows
        if self.iteration == at or (after and self.iteration > at):
            raise error
        return real_step(self)

    monkeypatch.setattr(Trainer, "step", failing)
