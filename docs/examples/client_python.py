"""Ask the runner, reward the answer, promote, and hear the new version: ratchet.client from Python.

Usage: python client_python.py [WORKSPACE]   (the servers' addresses and token come from its ratchet.toml)
"""

import sys

from ratchet.client import Ratchet, ToolCallError


def main(workspace: str = ".") -> None:
    with Ratchet.from_workspace(workspace) as rt:
        reply = rt.call("answer", question="How long do I have to return an item?", conversation_id="py-1")
        print("answer:", reply["answer"], f"({reply['style']})")

        rt.send("reward", conversation_id="py-1", value=1.0, event_id="py-1-thumbs-up")  # a repeat is ignored

        try:
            rt.send("reward", conversation_id="py-1", value=5)
        except ToolCallError as exc:  # names the field and the fix
            print("refused:", exc.field, "-", exc.fix)

        with rt.follow(("version://current",)) as changes:  # subscribed before promoting
            outcome = rt.promote(reason="a happy customer")
            if outcome["promoted"]:
                print("changed:", next(changes))
        print("serving:", rt.version())
        print("turns in py-1:", len(rt.session("py-1")["turns"]))


if __name__ == "__main__":
    main(*sys.argv[1:])
