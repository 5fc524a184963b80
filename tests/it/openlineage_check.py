"""Validate OpenLineage RunEvents (one JSON object a line, in the file named by argv[1]) with the
models of the `openlineage-python` package (generated from the OpenLineage JSON schema).

Every event is rebuilt from the generated attrs classes, strictly: a missing required field, a
field the schema does not define, a malformed runId (UUID) or eventTime (ISO 8601 with a time), an
unknown eventType, or a facet without `_producer` and `_schemaURL` fails. Standard facets are
built with their own classes; custom facets (prefixed `tidemark_`) are checked as BaseFacets.
Prints the number of events checked; exits 1 with the first problem.
"""

import json
import sys

from openlineage.client.generated import (
    base,
    dataset_version_dataset,
    error_message_run,
    parent_run,
)

EVENT_KEYS = {"eventType", "eventTime", "producer", "schemaURL", "run", "job", "inputs", "outputs"}


def strict(cls, d, where, **nested):
    """`cls` built from dict `d`: every key a field, facets' `_producer`/`_schemaURL` included."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected an object, found {d!r}")
    kwargs = {}
    for k, v in d.items():
        if k in ("_producer", "_schemaURL"):
            continue
        kwargs[k] = nested[k](v, f"{where}.{k}") if k in nested else v
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"{where}: {e}") from e


def facet_base(d, where):
    for k in ("_producer", "_schemaURL"):
        if not isinstance(d.get(k), str) or not d[k]:
            raise ValueError(f"{where}: a facet needs `{k}`")
    if "#/$defs/" not in d["_schemaURL"]:
        raise ValueError(f"{where}: `_schemaURL` must point at a definition: {d['_schemaURL']}")


def facets(d, where, known):
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ValueError(f"{where}: facets must be an object")
    out = {}
    for name, f in d.items():
        w = f"{where}.{name}"
        facet_base(f, w)
        if name in known:
            out[name] = known[name](f, w)
        elif name.startswith("tidemark_"):
            custom = {k: v for k, v in f.items() if not k.startswith("_")}
            out[name] = base.BaseFacet().with_additional_properties(**custom)
        else:
            raise ValueError(f"{w}: a facet this check does not know")
    return out


def parent(f, w):
    return strict(
        parent_run.ParentRunFacet,
        f,
        w,
        run=lambda v, x: strict(parent_run.Run, v, x),
        job=lambda v, x: strict(parent_run.Job, v, x),
    )


RUN_FACETS = {
    "parent": parent,
    "errorMessage": lambda f, w: strict(error_message_run.ErrorMessageRunFacet, f, w),
}
DATASET_FACETS = {
    "version": lambda f, w: strict(dataset_version_dataset.DatasetVersionDatasetFacet, f, w),
}


def dataset(cls):
    return lambda d, w: strict(
        cls, d, w, facets=lambda v, x: facets(v, x, DATASET_FACETS)
    )


def event(e, where):
    extra = set(e) - EVENT_KEYS
    if extra:
        raise ValueError(f"{where}: fields the schema does not define: {sorted(extra)}")
    if not str(e.get("schemaURL", "")).startswith("https://openlineage.io/spec/"):
        raise ValueError(f"{where}: schemaURL {e.get('schemaURL')!r}")
    return base.RunEvent(
        eventType=base.EventType(e["eventType"]),
        eventTime=e["eventTime"],
        producer=e["producer"],
        run=strict(
            base.Run, e["run"], f"{where}.run", facets=lambda v, x: facets(v, x, RUN_FACETS)
        ),
        job=strict(
            base.Job, e["job"], f"{where}.job", facets=lambda v, x: facets(v, x, {})
        ),
        inputs=[dataset(base.InputDataset)(d, f"{where}.inputs[{i}]") for i, d in enumerate(e.get("inputs", []))],
        outputs=[dataset(base.OutputDataset)(d, f"{where}.outputs[{i}]") for i, d in enumerate(e.get("outputs", []))],
    )


def main():
    n = 0
    with open(sys.argv[1], encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            try:
                event(json.loads(line), f"event {i}")
            except (ValueError, KeyError) as e:
                print(f"invalid OpenLineage event: {e}\n{line}", file=sys.stderr)
                sys.exit(1)
            n += 1
    print(n)


main()
