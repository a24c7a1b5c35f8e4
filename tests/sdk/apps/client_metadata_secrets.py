"""An app that uses the Dapr SDK client the ordinary way: ports and token
come from the environment `tandem run` sets."""
import os
import sys

import grpc

from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError

expected_id = sys.argv[1]

with DaprClient() as d:
    meta = d.get_metadata()
    assert meta.application_id == expected_id, meta.application_id
    names = sorted(c.name for c in meta.registered_components)
    assert names == ["files", "multi"], names
    print("metadata ok", meta.application_id, names, flush=True)

    d.set_metadata("team", "payments")
    assert d.get_metadata().extended_metadata["team"] == "payments"
    print("set_metadata ok", flush=True)

    s = d.get_secret(store_name="files", key="db:password")
    assert s.secret == {"db:password": "s3cret"}, s.secret
    s = d.get_secret(store_name="multi", key="db")
    assert s.secret == {"password": "s3cret", "user": "admin"}, s.secret
    print("get_secret ok", flush=True)

    bulk = d.get_bulk_secret(store_name="files")
    assert bulk.secrets["api-key"] == {"api-key": "abc"}, bulk.secrets
    assert "hidden" not in bulk.secrets, "scoped out"
    print("get_bulk_secret ok", sorted(bulk.secrets), flush=True)

    try:
        d.get_secret(store_name="files", key="hidden")
        raise SystemExit("a denied secret was returned")
    except grpc.RpcError as raw:
        # The SDK passes some RPC errors through unwrapped; its own parser
        # must still read our ErrorInfo.
        e = raw if isinstance(raw, DaprGrpcError) else DaprGrpcError(raw)
        assert e.code().name == "PERMISSION_DENIED", e.code()
        assert e.error_code() == "ERR_PERMISSION_DENIED", e.error_code()
    try:
        d.get_secret(store_name="nowhere", key="x")
        raise SystemExit("an unknown store answered")
    except grpc.RpcError as e:
        assert e.code().name == "INVALID_ARGUMENT", e.code()
        assert "nowhere" in e.details(), e.details()
    print("secret errors ok", flush=True)

print("ALL OK", os.environ.get("DAPR_HTTP_PORT"), os.environ.get("DAPR_GRPC_PORT"), flush=True)
