"""The Python SDK's conversation client against `conversation.echo`: alpha1,
alpha2 with a tool declared by the SDK's own decorator, and a second turn
built from the first answer with the SDK's helpers (as its examples do)."""
import sys

from dapr.clients import DaprClient
from dapr.clients.grpc import conversation


@conversation.tool
def get_weather(location: str, unit: str = "celsius") -> str:
    """Get the weather for a location."""
    return f"21 degrees {unit} in {location}"


def main():
    with DaprClient() as d:
        names = sorted(c.name for c in d.get_metadata().registered_components)
        print("COMPONENTS " + " ".join(names), flush=True)
        r = d.converse_alpha1(
            name="echo",
            inputs=[conversation.ConversationInput(content="one", role="user"),
                    conversation.ConversationInput(content="two", scrub_pii=True)],
            context_id="chat-123",
            parameters={"max_tokens": 100, "model": "test-model"},
            temperature=0.7,
        )
        assert [o.result for o in r.outputs] == ["one\ntwo"], r
        assert r.context_id == "chat-123", r
        print("ALPHA1 OK", flush=True)

        tools = conversation.get_registered_tools()
        first = d.converse_alpha2(
            name="echo",
            inputs=[conversation.ConversationInputAlpha2(messages=[
                conversation.create_system_message("be brief"),
                conversation.create_user_message("what is the weather in Lisbon? mail me at ana@example.com"),
            ], scrub_pii=True)],
            tools=tools,
            tool_choice="auto",
            temperature=0.3,
        )
        choice = first.outputs[0].choices[0]
        assert choice.finish_reason == "tool_calls", choice
        assert choice.message.content == "be brief\nwhat is the weather in Lisbon? mail me at <EMAIL_ADDRESS>", choice
        call = choice.message.tool_calls[0]
        assert (call.function.name, call.function.arguments) == ("get_weather", "location,unit"), call
        assert first.outputs[0].usage.total_tokens > 0, first.outputs[0]

        # Second turn: the answer as assistant messages, the tool's result.
        result = conversation.execute_registered_tool("get_weather", {"location": "Lisbon"})
        messages = first.to_assistant_messages() + [
            conversation.create_tool_message(tool_id=call.id, name="get_weather", content=result)
        ]
        second = d.converse_alpha2(
            name="echo", inputs=[conversation.ConversationInputAlpha2(messages=messages)]
        )
        text = second.outputs[0].choices[0].message.content
        assert f"Tool Response for tool ID '{call.id}' with name 'get_weather': 21 degrees celsius in Lisbon" in text, text
        print("ALPHA2 OK", flush=True)

        try:
            d.converse_alpha2(name="nope", inputs=[conversation.ConversationInputAlpha2(
                messages=[conversation.create_user_message("hi")])])
        except Exception as e:  # the SDK raises DaprGrpcError
            assert "failed finding conversation component nope" in str(e), e
            print("ERRORS OK", flush=True)


if __name__ == "__main__":
    sys.exit(main())
