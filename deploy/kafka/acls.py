#!/usr/bin/env python3
"""The least-privilege ACLs a streamfit config needs, as arguments for
Kafka's AclCommand, one invocation per line (deploy/kafka.sh grant).

    deploy/kafka/acls.py CONFIG [PRINCIPAL]

PRINCIPAL defaults to the config's `sasl.username`. For each model: read
(and describe) its input topic; write its output and dead-letter topics;
read, write and describe the configs of its checkpoint topic
(`<group_id>.<model>.checkpoints` unless `service.checkpoint_topic` names
one); create those topics only where streamfit creates them (inputs,
outputs and dead letters with `topics.create`, the default; checkpoint
topics always); read and describe its consumer group `<group_id>.<model>`
and the groups under the prefix `<group_id>.<model>.` (backfills, exports,
checkpoint readers), and write its transactional ids, all under that
prefix. The dot keeps model `waits` from reaching model `waits-v1`'s.
"""
import sys
import tomllib


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    with open(sys.argv[1], "rb") as f:
        config = tomllib.load(f)
    kafka = config.get("kafka", {})
    service = config.get("service", {})
    topics = config.get("topics", {})
    principal = sys.argv[2] if len(sys.argv) == 3 else kafka.get("sasl.username")
    if not principal:
        sys.exit(f"acls: {sys.argv[1]} sets no `sasl.username` in [kafka]; name the principal")
    group = service.get("group_id", "streamfit")
    create = topics.get("create", True)
    shared_ck = service.get("checkpoint_topic")
    inputs, outputs, checkpoints, prefixes = set(), set(), set(), set()
    for m in config.get("model", []):
        name = m["name"]
        inputs.add(m["input_topic"])
        outputs.add(m.get("output_topic", f"{name}.predictions"))
        outputs.add(m.get("dead_letter_topic", f"{name}.dead-letter"))
        checkpoints.add(shared_ck or f"{group}.{name}.checkpoints")
        prefixes.add(f"{group}.{name}")
    user = f"--allow-principal User:{principal}"

    def line(ops, kind, names, pattern="literal"):
        if not names:
            return
        args = [user, f"--resource-pattern-type {pattern}"]
        args += [f"--operation {o}" for o in ops]
        args += [f"--{kind} {n}" for n in sorted(names)]
        print(" ".join(args))

    maybe_create = ["Create"] if create else []
    line(["Read", "Describe"] + maybe_create, "topic", inputs)
    line(["Write", "Describe"] + maybe_create, "topic", outputs)
    line(["Read", "Write", "Describe", "DescribeConfigs", "Create"], "topic", checkpoints)
    under = {f"{p}." for p in prefixes}
    line(["Read", "Describe"], "group", prefixes)
    line(["Read", "Describe"], "group", under, "prefixed")
    line(["Write", "Describe"], "transactional-id", under, "prefixed")


main()
