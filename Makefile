# Every target creates the virtual environment on first use (.venv, from pyproject.toml).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CIFAR10_ZIP ?= ../shared/data/cifar10-jpg.zip
comma := ,

DEMO_IMAGES ?= shapes:test
DEMO_METHOD ?= pixels
DEMO_INDEX ?= artifacts/search/demo-$(subst :,_,$(DEMO_METHOD))-$(subst /,_,$(subst :,_,$(DEMO_IMAGES)))
DEMO_PORT ?= 8000
ONNX_DIR ?= artifacts/onnx
ENGINE_DIR ?= artifacts/engines

.PHONY: venv quickstart train seeds test test-all lint accuracy onnx engines parity bench demo clean \
	gpu-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

## The main job end to end on the built-in synthetic data (CPU, no download): a short training
## run of the Siamese triplet network, then every method that can run here, on unseen classes.
quickstart: venv
	$(BIN)/python -m train --method triplet --data shapes --depth 20 --epochs 1 \
		--samples-per-epoch 5120 --out results/quickstart --overwrite
	$(BIN)/python -m bench.accuracy --data shapes \
		--methods all,triplet:results/quickstart/triplet.safetensors \
		--protocol seed,episodes,retrieval --out results/quickstart/accuracy.json

## Train the three trained methods with the default recipe (GPU: TRAIN_ARGS="--device cuda").
TRAIN_DATA ?= shapes
TRAIN_NAME ?= $(subst :,_,$(notdir $(TRAIN_DATA)))
EPOCHS ?= 30
TRAIN_ARGS ?=
train: venv
	for m in triplet contrastive autoencoder; do \
		$(BIN)/python -m train --method $$m --data $(TRAIN_DATA) --epochs $(EPOCHS) \
			--out checkpoints/$(TRAIN_NAME) $(TRAIN_ARGS) || exit 1; \
	done

## The trained methods over training seeds on the real CIFAR-10 (ResNet-20, 5 epochs of 10,240
## samples each), evaluated on the unseen classes, then combined: mean and a CI that covers the
## seed-to-seed spread (bench.seeds). About 35 min per seed on 2 CPU cores.
SEEDS ?= 0 1 2
SEED_DIR ?= checkpoints/cifar10-seeds
SEED_CKPTS = $(foreach s,$(SEEDS),$(foreach m,triplet contrastive autoencoder,$(m):$(SEED_DIR)/s$(s)/$(m).safetensors))
seeds: venv
	for s in $(SEEDS); do for m in triplet contrastive autoencoder; do \
	  test -f $(SEED_DIR)/s$$s/$$m.safetensors || \
	  $(BIN)/python -m train --method $$m --data imagefolder:$(CIFAR10_ZIP) --depth 20 --epochs 5 \
	    --samples-per-epoch 10240 --seed $$s --out $(SEED_DIR)/s$$s $(TRAIN_ARGS) || exit 1; \
	done; done
	$(BIN)/python -m bench.accuracy --data imagefolder:$(CIFAR10_ZIP) --protocol seed,episodes,retrieval \
	  --methods $(subst $(eval) ,$(comma),$(SEED_CKPTS)),pixels,color-hist \
	  --out results/cifar10/accuracy-seeds.json
	$(BIN)/python -m bench.seeds results/cifar10/accuracy-seeds.json \
	  --out results/cifar10/accuracy-seeds-summary.json

## Fast tests (what CI runs); the 15 slowest are listed so that a slow test is seen when added.
test: venv
	$(BIN)/python -m pytest -q --durations=15

## Every test, slow ones included.
test-all: venv
	$(BIN)/python -m pytest -q -m ""

lint: venv
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

## The committed accuracy tables (shapes, and the real CIFAR-10 zip where present).
accuracy: venv
	$(BIN)/python -m bench.accuracy --data shapes --methods pixels,color-hist \
		--out results/shapes/accuracy-baselines.json
	$(BIN)/python -m bench.accuracy --data imagefolder:$(CIFAR10_ZIP) --methods pixels,color-hist \
		--out results/cifar10/accuracy-baselines.json

## ONNX (FP32 + FP16, checked against PyTorch) for every neural method whose weights are present.
onnx: venv
	$(BIN)/python -m export --method pixels --out $(ONNX_DIR)

## FP16 TensorRT engines from the ONNX files (needs TensorRT and an NVIDIA GPU).
engines: venv
	$(BIN)/python -m engines.build --onnx-dir $(ONNX_DIR) --out $(ENGINE_DIR)

## What a machine with an NVIDIA GPU runs first: a short CUDA training run, export, a TensorRT
## engine, parity and a batch sweep of every GPU backend, written to results/gpu/<gpu>/ (JSON +
## SUMMARY.md); a time budget (--budget-s) keeps it within 6 minutes. Without a GPU: one line, exit 0.
gpu-check: venv
	$(BIN)/python -m bench.gpu_check

## Parity of the optimized backends against PyTorch fp32 (exit 1 on FAIL).
parity: onnx
	$(BIN)/python -m bench.parity --method pixels --backend onnxruntime --precision fp32 \
		--out results/shapes/parity/pixels-onnxruntime-fp32.json
	$(BIN)/python -m bench.parity --method pixels --backend onnxruntime --precision fp16 \
		--out results/shapes/parity/pixels-onnxruntime-fp16.json
	$(BIN)/python -m bench.parity --method pixels --backend torch --precision bf16 \
		--out results/shapes/parity/pixels-torch-bf16.json

## The whole chain on $(BENCH_DATA): train (if no checkpoint), export, accuracy, parity, fps,
## report. A parity FAIL is a result (shown in the report), so the chain goes on after one.
BENCH_DATA ?= shapes
BENCH_NAME ?= shapes
NEURAL := triplet contrastive autoencoder
# Backend setups come from bench.setups: only precisions this machine runs natively (parity
# also checks the FP16 ONNX, the graph TensorRT builds).
CKPTS := $(foreach m,$(NEURAL),$(m):checkpoints/$(BENCH_NAME)/$(m).safetensors)
bench: venv
	for m in $(NEURAL); do \
	  test -f checkpoints/$(BENCH_NAME)/$$m.safetensors || \
	    $(BIN)/python -m train --method $$m --data $(BENCH_DATA) --epochs $(EPOCHS) \
	      --out checkpoints/$(BENCH_NAME) $(TRAIN_ARGS) || exit 1; \
	  $(BIN)/python -m export --method $$m --checkpoint checkpoints/$(BENCH_NAME)/$$m.safetensors \
	    --data $(BENCH_DATA) --out $(ONNX_DIR)/$(BENCH_NAME) || exit 1; \
	done
	$(BIN)/python -m bench.accuracy --data $(BENCH_DATA) --protocol seed,episodes \
	  --methods pixels,color-hist,$(subst $(eval) ,$(comma),$(CKPTS)) \
	  --out results/$(BENCH_NAME)/accuracy-bench.json
	for m in $(NEURAL); do \
	  W="--checkpoint checkpoints/$(BENCH_NAME)/$$m.safetensors --onnx-dir $(ONNX_DIR)/$(BENCH_NAME)"; \
	  for s in $$($(BIN)/python -m bench.setups parity); do b=$${s%:*}; p=$${s#*:}; \
	    $(BIN)/python -m bench.parity --method $$m $$W --data $(BENCH_DATA) --backend $$b \
	      --precision $$p --out results/$(BENCH_NAME)/parity/$$m-$$b-$$p.json; \
	  done; \
	  $(BIN)/python -m bench.fps --method $$m $$W --batch-sizes 1,32,256 --backend torch \
	    --precision fp32 --no-channels-last --out results/fps/$$m-torch-fp32-nchw-cpu.json || exit 1; \
	  for s in $$($(BIN)/python -m bench.setups fps); do b=$${s%:*}; p=$${s#*:}; \
	    $(BIN)/python -m bench.fps --method $$m $$W --batch-sizes 1,32,256 --backend $$b \
	      --precision $$p --out results/fps/$$m-$$b-$$p-cpu.json || exit 1; \
	  done; \
	done
	$(BIN)/python -m bench.report --results results

## Index a gallery (default: the built-in shapes test split) and serve the search page.
demo: venv
	$(BIN)/python -m search index --method $(DEMO_METHOD) --images $(DEMO_IMAGES) --out $(DEMO_INDEX)
	$(BIN)/python -m search serve $(DEMO_INDEX) --port $(DEMO_PORT)

clean:
	rm -rf $(VENV) results/quickstart
