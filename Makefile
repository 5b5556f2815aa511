# Set-up for a fresh machine is two commands:
#   make run    install everything, then run the notebooks on the CPU profile (PROFILE=... to change it)
#   make test   install everything, then run the tests
# Two more keep the published figures in step with a run (docs/contributing.md):
#   make publish    a whole run that also writes its tables and plots into README.md, docs/ and screenshots/
#   make reference  copy the last run of PROFILE into results/reference/PROFILE/ for readers (commit it)

PROFILE ?= cpu-smollm2
VENV    := .venv
PYTHON  := $(VENV)/bin/python
# Touched after a successful install, so pip runs again only when requirements.txt is newer.
STAMP   := $(VENV)/.requirements-installed

.PHONY: run test install publish reference
.DEFAULT_GOAL := run

run: install
	$(PYTHON) -m helpers --profile $(PROFILE)

publish: install
	$(PYTHON) -m helpers --profile $(PROFILE) --publish

reference: install
	$(PYTHON) -m helpers.course.reference --profile $(PROFILE)

# pytest options (test folder, -q) live in pytest.ini.
test: install
	$(PYTHON) -m pytest

install: $(STAMP)

$(PYTHON):
	python3 -m venv $(VENV)

# Order-only on $(PYTHON): the venv must exist first, but the interpreter's timestamp says nothing
# about which packages are installed.
# requirements-nodeps.txt holds packages whose declared dependencies we do not need (see its comment).
$(STAMP): requirements.txt requirements-nodeps.txt | $(PYTHON)
	$(PYTHON) -m pip install -r requirements.txt
	$(PYTHON) -m pip install --no-deps -r requirements-nodeps.txt
	touch $@
