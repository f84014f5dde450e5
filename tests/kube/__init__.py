"""The emulated Kubernetes API server for end-to-end tests (kmock 0.8 made real enough for kopf and kubectl).

Modules:

- ``emulator``: :class:`~tests.kube.emulator.KubeEmulator`, a ``kmock.KubernetesEmulator`` subclass: discovery,
  store (uids, resourceVersions, generations, timestamps, generateName), list/watch with label and field
  selectors, POST/PUT/PATCH (merge, JSON, strategic merge for builtins; 415 for strategic merge on CRs),
  the status subresource split, DELETE with finalizers, owner-reference GC, namespaces, CRD registration,
  CRD schema defaulting/pruning/validation (422 naming the field; 400 for unknown fields under kubectl's
  ``fieldValidation=Strict``), server-side Tables from printer columns, a stub OpenAPI v3 so that plain
  ``kubectl apply`` uses server-side validation. kmock reactions still win: ``emulator['list',
  kmock.resource('v1/pods')][:1] << 503`` injects one API fault.
- ``cluster``: :func:`~tests.kube.cluster.run_cluster` (server on 127.0.0.1:<free port>, builtins, namespaces,
  kubeconfig) and :class:`~tests.kube.cluster.Cluster`, which the ``cluster`` fixture (tests/e2e/conftest.py)
  yields; :func:`~tests.kube.cluster.eventually` polls with a deadline.
- ``kubectl``: the real kubectl, asynchronously (never block the loop the emulator serves on);
  ``columns(output)`` parses its tables.
- ``operator``: :func:`~tests.kube.operator.running_operator` runs a kopf registry in the test's loop.
- ``kubelet``: play the kubelet/scheduler/Job controller (``pod_running``, ``pod_terminated``, ``job_finished``,
  :class:`~tests.kube.kubelet.Kubelet`).
- ``schemas``, ``tables``, ``selectors``, ``patching``, ``errors``: the server's pieces.

Not emulated: protobuf (``kubectl create job|ns|configmap ...`` send protobuf and get 415; use
``kubectl create ... --dry-run=client -o yaml | kubectl apply -f -``), OpenAPI schemas (``kubectl explain``),
``/scale``, ``exec``/``attach``/``port-forward``, ``kubectl logs`` (always empty), server-side apply field
ownership (``--server-side`` is a merge), aggregated discovery, authn/authz, admission webhooks, CEL rules.
"""
