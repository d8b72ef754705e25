"""The hooks of the hello plugin, and nothing else: views are in routes.py,
the task in tasks.py. The entry point ``hello = agent_hello.plugin`` in
setup.cfg names the plugin ``hello``: config section ``[hello]``, URL prefix
``/hello``, task prefix ``hello.``."""

from agent_core.hookspecs import Option, Route, TaskType, hookimpl

from . import metrics, routes, tasks


@hookimpl
def agent_add_config(schema):
    schema.add(Option("greeting", str, "Hello", "Word the /hello route greets with."))


@hookimpl
def agent_register_routes(agent):
    return [
        Route("GET", "/hello", routes.hello, key=True),
        Route("POST", "/hello/count/<dbname>", routes.schedule_count, openapi=routes.SCHEDULE_COUNT_API),
        Route("GET", "/hello/count/<op_id>", routes.get_count),
    ]


@hookimpl
def agent_register_tasks(agent):
    return [TaskType("hello.count", tasks.count_tables, description="Count the tables of a database.")]


@hookimpl
def agent_metrics(agent):
    return [metrics.Tables(agent)]
