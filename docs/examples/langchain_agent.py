"""An LLM agent that uses the runner's tools: every tool the runner lists becomes a LangChain tool.

Usage: python langchain_agent.py RUNNER_URL MODEL "question"
       e.g. python langchain_agent.py http://127.0.0.1:8701/mcp openai:gpt-4o-mini "Can I return shoes?"
"""

import asyncio
import sys

from langchain.agents import create_agent
from langchain.chat_models import init_chat_model
from langchain_core.tools import StructuredTool, ToolException

from ratchet.client import AsyncRatchet, ToolCallError

SYSTEM = "You answer customers with the support tools. Pass conversation_id 'agent-1' to every tool call."


def as_langchain_tool(rt: AsyncRatchet, name: str, description: str, schema: dict) -> StructuredTool:
    async def run(**arguments):
        try:
            return await rt.call(name, **arguments)
        except ToolCallError as exc:  # the model reads the field and the fix, and can retry
            raise ToolException(str(exc)) from exc

    return StructuredTool(name=name, description=description, args_schema=schema, coroutine=run,
                          handle_tool_error=True)


async def main(runner_url: str, model: str, question: str) -> None:
    async with AsyncRatchet(runner_url) as rt:
        tools = [as_langchain_tool(rt, t.name, t.description or t.name, t.input_schema) for t in await rt.tools()]
        agent = create_agent(init_chat_model(model), tools, system_prompt=SYSTEM)
        result = await agent.ainvoke({"messages": [("user", question)]})
        print(result["messages"][-1].content)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
