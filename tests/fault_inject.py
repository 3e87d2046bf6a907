"""`python tests/fault_inject.py POINT STEP sicog-args...`: run `sicog` and SIGKILL it at a chosen point.

Points (deterministic, chosen by training progress):
  checkpoint-save     while checkpoint-STEP is being written (weights saved, optimizer not yet)
  checkpoint-publish  after checkpoint-STEP is complete and marked, before it is renamed into place
"""
import os
import signal
import sys

from sicog.train import trainer


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def inject(point: str, step: int) -> None:
    if point == "checkpoint-save":
        save = trainer.SicogTrainer._save_optimizer_and_scheduler

        def killed_save(self, output_dir):
            if self.state.global_step == step:
                _die()
            return save(self, output_dir)

        trainer.SicogTrainer._save_optimizer_and_scheduler = killed_save
    elif point == "checkpoint-publish":
        publish = trainer.publish

        def killed_publish(staged, final):
            if final.name == f"checkpoint-{step}":
                _die()
            return publish(staged, final)

        trainer.publish = killed_publish
    else:
        raise SystemExit(f"unknown fault point {point!r}")


if __name__ == "__main__":
    inject(sys.argv[1], int(sys.argv[2]))
    from sicog.cli import main

    sys.exit(main(sys.argv[3:]))
