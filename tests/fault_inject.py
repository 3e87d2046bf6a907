"""`python tests/fault_inject.py POINT STEP sicog-args...`: run `sicog` and SIGKILL it at a chosen point.

Points (deterministic, chosen by training progress):
  checkpoint-save     while checkpoint-STEP is being written (weights saved, optimizer not yet)
  checkpoint-publish  after checkpoint-STEP is complete and marked, before it is renamed into place
  evaluate-prediction while `sicog evaluate` writes its prediction STEP+1 (counted over all benchmarks):
                      STEP complete prediction lines on disk, then half a line
  generate-pause      (not a kill) `sicog generate` waits before its first batch until the file named by
                      $SICOG_TEST_RELEASE exists: a run that holds its output for as long as a test needs
  append-torn         while the run appends its record STEP+1 to a JSONL file whose name matches the glob
                      $SICOG_TEST_KILL_FILE (generate's shard, curate's partial scores, annotate-cod's
                      progress): STEP complete lines on disk, then half a line
  publish-final       after the run wrote its final file STEP+1 matching $SICOG_TEST_KILL_FILE in full to
                      its temporary name, before the rename: the final file is not there, its temporary is
"""
import fnmatch
import os
import signal
import sys
import time


def report_kills(stage: str, **facts) -> None:
    """Append a row of the kill table (stage, kills, resumed, lost, duplicated, identical) to the JSONL file
    named by $SICOG_FAULT_REPORT, when it is set: the closing notes' table is measured, not typed."""
    path = os.environ.get("SICOG_FAULT_REPORT")
    if path:
        import json

        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"stage": stage, **facts}) + "\n")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_mid_append(step: int, matches) -> None:
    """Die while appending record STEP+1 (counted over the files `matches` accepts): half a line on disk."""
    from sicog.data import records

    write = records.JsonlAppender.write
    written = [0]

    def killed_write(self, record):
        if matches(self.path):
            if written[0] == step:
                line = records.dumps(record) + "\n"
                self._f.write(line[: len(line) // 2])
                self._f.flush()
                _die()
            written[0] += 1
        return write(self, record)

    records.JsonlAppender.write = killed_write


def inject(point: str, step: int) -> None:
    if point.startswith("checkpoint-"):
        from sicog.train import trainer
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
        _kill_mid_append(step, lambda path: path.parent.name == "predictions")
    elif point == "append-torn":
        pattern = os.environ["SICOG_TEST_KILL_FILE"]
        _kill_mid_append(step, lambda path: fnmatch.fnmatch(path.name, pattern))
    elif point == "publish-final":
        pattern = os.environ["SICOG_TEST_KILL_FILE"]
        replace, published = os.replace, [0]

        def killed_replace(src, dst, *args, **kwargs):
            if fnmatch.fnmatch(os.path.basename(os.fspath(dst)), pattern):
                if published[0] == step:
                    _die()
                published[0] += 1
            return replace(src, dst, *args, **kwargs)

        os.replace = killed_replace
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
