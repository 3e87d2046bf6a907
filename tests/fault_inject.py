"""`python tests/fault_inject.py POINT STEP sicog-args...`: run `sicog` and SIGKILL it at a chosen point.

Points (deterministic, chosen by training progress):
  checkpoint-save     while checkpoint-STEP is being written (weights saved, optimizer not yet)
  checkpoint-publish  after checkpoint-STEP is complete and marked, before it is renamed into place
  evaluate-prediction while `sicog evaluate` writes its prediction STEP+1 (counted over all benchmarks):
                      STEP complete prediction lines on disk, then half a line
  generate-pause      (not a kill) `sicog generate` waits before its first batch until the file named by
                      $SICOG_TEST_RELEASE exists: a run that holds its output for as long as a test needs
"""
import os
import signal
import sys
import time

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
    elif point == "evaluate-prediction":
        from sicog.data import records

        write = records.JsonlAppender.write
        written = [0]

        def killed_write(self, record):
            if self.path.parent.name == "predictions":
                if written[0] == step:
                    line = records.dumps(record) + "\n"
                    self._f.write(line[: len(line) // 2])
                    self._f.flush()
                    _die()
                written[0] += 1
            return write(self, record)

        records.JsonlAppender.write = killed_write
    elif point == "generate-pause":
        from pathlib import Path

        from sicog.generate import engine

        generate_ids = engine.CandidateEngine.generate_ids
        release = Path(os.environ["SICOG_TEST_RELEASE"])

        def paused(self, *args, **kwargs):
            while not release.exists():
                time.sleep(0.05)
            return generate_ids(self, *args, **kwargs)

        engine.CandidateEngine.generate_ids = paused
    else:
        raise SystemExit(f"unknown fault point {point!r}")


if __name__ == "__main__":
    inject(sys.argv[1], int(sys.argv[2]))
    from sicog.cli import main

    sys.exit(main(sys.argv[3:]))
