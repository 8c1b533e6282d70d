# hub downloads against tests/hf_server.py, a fake hub on 127.0.0.1 (python3, standard library): cache
# layout, resume, verification, retries, auth, offline mode, model snapshots, hf:// references.
qc_test(test_hf_hub test_hf_hub.c LABELS net TIMEOUT 300)
