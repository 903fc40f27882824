"""From compiled descriptors and the manifest to the intermediate model (and its checks)."""

from __future__ import annotations

import difflib
import keyword
import re

from google.protobuf import descriptor_pb2

from msuite.spec import Diagnostic, Manifest, format_path

from . import model
from .protoc import CodegenError, Compiled

__all__ = ["build_project", "fix_imports", "module_of"]

_METHOD_RESOURCE = re.compile(r"^/(?P<service>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)/(?P<method>[^/]+)$")
_HTTP_VERBS = ("get", "put", "post", "delete", "patch")
_RESERVED_EVENT_FIELDS = {"topic", "to_bytes", "from_bytes"} | {
    name for name in dir(__import__("pydantic").BaseModel) if not name.startswith("__")
}


def module_of(proto_name: str, suffix: str) -> str:
    """``a/b/x.proto`` -> ``a.b.x_pb2`` (with ``suffix`` ``_pb2``)."""
    return proto_name[: -len(".proto")].replace("/", ".").replace("-", "_") + suffix


def snake_case(name: str) -> str:
    words = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", words).lower()


def fix_imports(path: str, text: str, generated: set[str]) -> str:
    """Make imports between generated modules relative, so the output folder is a package."""
    depth = path.count("/")
    dots = "." * (depth + 1)

    def target(module: str) -> tuple[str, str]:
        parent, _, leaf = module.rpartition(".")
        return dots + parent, leaf

    out = []
    for original in text.splitlines(keepends=True):
        line = original
        stripped = original.rstrip("\n")
        match = re.match(r"^(\s*)import ([\w.]+) as (\w+)$", stripped)
        if match and match[2] in generated:
            where, leaf = target(match[2])
            line = f"{match[1]}from {where} import {leaf} as {match[3]}\n"
        else:
            match = re.match(r"^(\s*)from ([\w.]+) import (\w+)( as \w+)?$", stripped)
            if match and f"{match[2]}.{match[3]}" in generated:
                line = f"{match[1]}from {dots}{match[2]} import {match[3]}{match[4] or ''}\n"
        out.append(line)
    return "".join(out)


def _http_routes(method: descriptor_pb2.MethodDescriptorProto, service: str) -> tuple[model.Route, ...]:
    from google.api import annotations_pb2

    options = descriptor_pb2.MethodOptions.FromString(method.options.SerializeToString())
    if not options.HasExtension(annotations_pb2.http):
        return (model.Route("POST", f"/{service}/{method.name}", "*", "", annotated=False),)
    rule = options.Extensions[annotations_pb2.http]
    routes = []
    for r in [rule, *rule.additional_bindings]:
        pattern = r.WhichOneof("pattern")
        if pattern is None:
            continue
        if pattern == "custom":
            verb, path = r.custom.kind.upper(), r.custom.path
        else:
            verb, path = pattern.upper(), getattr(r, pattern)
        routes.append(model.Route(verb, path, r.body, r.response_body, annotated=True))
    return tuple(routes)


def _where(manifest: Manifest, path: tuple[str | int, ...], *, key: bool = False) -> tuple[str, int, int]:
    source = manifest.source
    if source is None:
        return "<python>", 0, 0
    pos = source.locate(path, prefer_key=key)
    return source.file, pos.line, pos.column


def _diag(manifest: Manifest, path: tuple[str | int, ...], message: str, *, key: bool = False) -> Diagnostic:
    file, line, column = _where(manifest, path, key=key)
    return Diagnostic(file, line, column, format_path(path), message)


def build_project(manifest: Manifest, compiled: Compiled, header: str) -> model.Project:
    """The model to render; raises CodegenError listing every located problem."""
    problems: list[Diagnostic] = []
    by_name: dict[str, tuple[descriptor_pb2.ServiceDescriptorProto, str]] = {}
    for file in compiled.descriptors.file:
        for service in file.service:
            full = f"{file.package}.{service.name}" if file.package else service.name
            by_name[full] = (service, file.name)
    user_files = {s.name for s in compiled.sources}

    services: list[model.Service] = []
    accessors: dict[str, str] = {}
    for name, declared in manifest.services.items():
        found = by_name.get(name)
        if found is None or found[1] not in user_files:
            near = difflib.get_close_matches(name, list(by_name), n=1)
            hint = f"; did you mean '{near[0]}'?" if near else ""
            problems.append(
                _diag(
                    manifest,
                    ("services", name),
                    f"{declared.proto} declares no service {name}{hint}",
                    key=True,
                )
            )
            continue
        descriptor, proto_name = found
        accessor = snake_case(descriptor.name)
        if keyword.iskeyword(accessor):
            accessor += "_"
        if accessor in accessors:
            problems.append(
                _diag(
                    manifest,
                    ("services", name),
                    f"generates the same Python name '{accessor}' as {accessors[accessor]}",
                    key=True,
                )
            )
            continue
        accessors[accessor] = name
        grpc_module = module_of(proto_name, "_pb2_grpc")
        methods = tuple(
            model.Method(
                m.name,
                m.input_type.lstrip("."),
                m.output_type.lstrip("."),
                m.client_streaming,
                m.server_streaming,
                _http_routes(m, name),
            )
            for m in descriptor.method
        )
        services.append(
            model.Service(
                name,
                descriptor.name,
                declared.impl,
                grpc_module,
                grpc_module.replace(".", "_"),
                accessor,
                methods,
            )
        )

    acl: list[model.AclRule] = []
    if manifest.auth is not None:
        for resource, role in manifest.auth.acl.items():
            acl.append(model.AclRule(resource, role.value))
            match = _METHOD_RESOURCE.match(resource)
            if match is None:
                continue  # an HTTP path
            service_name, method_name = match["service"], match["method"]
            path = ("auth", "acl", resource)
            if service_name not in by_name:
                problems.append(
                    _diag(manifest, path, f"no service {service_name} in the compiled protos", key=True)
                )
                continue
            names = [m.name for m in by_name[service_name][0].method]
            if method_name not in names:
                near = difflib.get_close_matches(method_name, names, n=1)
                hint = f"; did you mean '{near[0]}'?" if near else ""
                problems.append(
                    _diag(
                        manifest, path, f"service {service_name} has no method {method_name}{hint}", key=True
                    )
                )

    events: list[model.Event] = []
    for event_name, fields in manifest.events.items():
        if keyword.iskeyword(event_name) or event_name in {"Event", "ClassVar"}:
            problems.append(
                _diag(manifest, ("events", event_name), f"'{event_name}' cannot name a class", key=True)
            )
            continue
        event_fields = []
        for field_name, type_text in fields.items():
            if keyword.iskeyword(field_name) or field_name in _RESERVED_EVENT_FIELDS:
                problems.append(
                    _diag(
                        manifest,
                        ("events", event_name, field_name),
                        f"'{field_name}' cannot name a field",
                        key=True,
                    )
                )
                continue
            annotation = " ".join(type_text.split())
            event_fields.append(model.EventField(field_name, annotation, annotation.endswith("| None")))
        uses_datetime = any("datetime" in f.annotation for f in event_fields)
        events.append(
            model.Event(event_name, f"msuite/events/{event_name}", tuple(event_fields), uses_datetime)
        )

    if problems:
        raise CodegenError(problems)
    packages = sorted({p.rsplit("/", 1)[0] for p in compiled.files if "/" in p})
    all_packages: set[str] = set()
    for package in packages:
        parts = package.split("/")
        all_packages.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return model.Project(
        manifest.name,
        header,
        tuple(services),
        tuple(events),
        tuple(acl),
        tuple(sorted(all_packages)),
    )
