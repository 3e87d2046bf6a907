PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EVAL_STAMP := $(VENV)/.eval-installed
SIZE ?= mini
OUT ?= runs/reproduce-$(SIZE)
# pytest-xdist workers (one per core, at most 4; each computes with its share of the cores); 0 runs in one process
TEST_WORKERS ?= auto

# VLMEvalKit's runtime needs, installed beside it without letting its web-UI dependencies
# (gradio pins Pillow < 13) move torch, torchvision, transformers, Pillow, numpy or pandas.
VLMEVAL_RUNTIME := decord imageio omegaconf "opencv-python>=4.4.0.46" portalocker protobuf python-dotenv \
	requests rich sentencepiece sty tabulate tiktoken timeout-decorator validators "xlsxwriter<=3.2.3"

.PHONY: install install-eval test reproduce bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

$(EVAL_STAMP): $(STAMP)
	$(PY) -m pip freeze | grep -iE '^(torch|torchvision|transformers|pillow|numpy|pandas)==' > $(VENV)/eval-constraints.txt
	$(PY) -m pip install --quiet --no-deps nvidia-vlmeval==26.3
	$(PY) -m pip install --quiet -c $(VENV)/eval-constraints.txt $(VLMEVAL_RUNTIME)
	touch $(EVAL_STAMP)

install-eval: $(EVAL_STAMP)

# VLMEvalKit is required here: its tests score the oracle, and a failed install must fail the run.
test: $(STAMP) $(EVAL_STAMP)
	SICOG_REQUIRE_VLMEVAL=1 $(PY) -m pytest -p no:cacheprovider -n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile --durations=30

reproduce: $(STAMP)
	$(VENV)/bin/sicog reproduce --out $(OUT) --size $(SIZE)

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) runs
