#!/usr/bin/env python3
"""Runs ../shared/tools/loader_check.py on an OPT or Phi-3 checkpoint.

The shared check restates which in-block linears GPTQModel and AutoAWQ build as quantized modules from the
Llama family's names (TREE_LINEARS). Both loaders build every nn.Linear of a decoder layer: for OPT,
GPTQModel's OPT definition lists self_attn.{q,k,v}_proj, self_attn.out_proj, fc1 and fc2, and AutoAWQ's
get_named_linears collects the same six; for Phi-3, AutoAWQ's phi3.py scales and quantizes the fused
self_attn.qkv_proj and mlp.gate_up_proj as whole modules (get_layers_for_scaling names them). This adds
those names to that tuple and runs the check unchanged otherwise.

usage: arch_loader_check.py LOADER_CHECK OUT ORIG [loader_check args...]
"""
import importlib.util
import sys

spec = importlib.util.spec_from_file_location("loader_check", sys.argv[1])
lc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lc)
extra = ("out_proj", "fc1", "fc2", "qkv_proj", "gate_up_proj")
lc.TREE_LINEARS = tuple(lc.TREE_LINEARS) + tuple(n for n in extra if n not in lc.TREE_LINEARS)
sys.argv = [sys.argv[1]] + sys.argv[2:]
sys.exit(lc.main())
