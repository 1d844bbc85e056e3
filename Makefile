# Top-level entry points. Every target creates the virtual environment in
# .venv on first use, so a fresh machine needs nothing but Python 3.10+.

PYTHON     ?= python3
VENV       := .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed
MODEL      ?= models/shakespeare-h128-l4
CONFIG     ?= bundled
BOARD      ?= ulx3s-85f
PROMPT     ?=
TOKENS     ?= 64
PYTEST_ARGS ?=
BENCH_ARGS ?=
CLOCK_MHZ  ?=
BAUD       ?=
WRITE_FLASH ?=

.PHONY: all demo serial-demo test test-all fidelity image verilog lint bitstream flash bench train clean distclean

all: verilog

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(STAMP)

# The main job: the bundled model on the simulated accelerator. The prompt
# reaches it through the environment, so the shell does not parse it again:
# quotes and backquotes stay as typed.
demo: $(STAMP)
	$(PY) -m sim.demo --model $(MODEL) --tokens $(TOKENS) $(if $(PROMPT),--prompt "$$PROMPT") $(if $(filter 1,$(WAVES)),--waves)

# The host runtime (`mmfree run --check`) against the simulated board design,
# through a pseudo-terminal bridged to its UART pins.
serial-demo: $(STAMP)
	$(PY) -m sim.serial_demo --tokens $(TOKENS) $(if $(PROMPT),--prompt "$$PROMPT") $(if $(filter 1,$(WAVES)),--waves)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q -m '' $(PYTEST_ARGS)

# Float and integer model side by side on the held-out text.
fidelity: $(STAMP)
	$(PY) -m golden.fidelity --model $(MODEL)

image: $(STAMP)
	$(PY) -m golden.image --model $(MODEL) --output build/$(notdir $(MODEL)).mmfi

verilog: $(STAMP)
	$(PY) -m hw.generate --config $(CONFIG) --output build/verilog/$(CONFIG)

lint: verilog
	$(PY) -m hw.lint build/verilog/$(CONFIG)

bitstream: $(STAMP)
	$(PY) -m boards.build --board $(BOARD) --config $(CONFIG) $(if $(CLOCK_MHZ),--clock-mhz $(CLOCK_MHZ)) \
		$(if $(BAUD),--baud $(BAUD))

# WRITE_FLASH=1 writes the board's SPI flash instead of the FPGA's SRAM.
flash: $(STAMP)
	$(PY) -m pip install --quiet -e '.[flash]'
	$(PY) -m boards.flash --board $(BOARD) --config $(CONFIG) $(if $(filter 1,$(WRITE_FLASH)),--write-flash)

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m sim.bench $(BENCH_ARGS)

# Retrains the bundled model (about 25 minutes on 2 CPU cores).
train: $(STAMP)
	$(PY) -m pip install --quiet -e '.[train]'
	$(PY) train/train_shakespeare.py --output $(MODEL)

clean:
	rm -rf build

distclean: clean
	rm -rf $(VENV)
