# The local Kubernetes control plane for the operator and e2e tests.
# Included by the top-level Makefile, which defines BIN (the venv's bin dir) and
# STAMP (the venv's install stamp). See docs/development.md.
.PHONY: k8s-binaries cluster-up cluster-down cluster-status

# Builds (once, then cached outside the repo by version) kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, etcd, kwok and helm.
k8s-binaries:
	bash e2e/build-k8s-binaries.sh

cluster-up: k8s-binaries $(STAMP)
	$(BIN)/python e2e/cluster.py up

cluster-down: | $(STAMP)
	$(BIN)/python e2e/cluster.py down

cluster-status: | $(STAMP)
	$(BIN)/python e2e/cluster.py status
