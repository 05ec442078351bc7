"""Tools a model may call: the server's own (``VOXRELAY_TOOLS``), run by the server, and
those a client declares for its session, run by the client."""

from voxrelay.tools.declarations import FunctionTool, client_tools, function_tool, tool_name
from voxrelay.tools.loading import ToolFileError, load_tools
from voxrelay.tools.running import Outcome, output_text, run_tool
from voxrelay.tools.toolbox import NO_TOOLS, HttpEndpoint, PythonCallable, ServerTool, Toolbox

__all__ = [
    "NO_TOOLS",
    "FunctionTool",
    "HttpEndpoint",
    "Outcome",
    "PythonCallable",
    "ServerTool",
    "ToolFileError",
    "Toolbox",
    "client_tools",
    "function_tool",
    "load_tools",
    "output_text",
    "run_tool",
    "tool_name",
]
