"""Only hook implementations live here; views are in routes.py, work in tasks.py."""

from agent_core.hookspecs import Option, Route, TaskType, hookimpl

from . import routes, tasks


@hookimpl
def agent_add_config(schema):
    schema.add(Option("greeting", str, "Hello", "Word the /hello route greets with."))


@hookimpl
def agent_register_routes(agent):
    return [
        Route("GET", "/hello", routes.hello, key=True),
        Route("POST", "/hello/count/<dbname>", routes.schedule_count),
        Route("GET", "/hello/count/<op_id>", routes.get_count),
    ]


@hookimpl
def agent_register_tasks(agent):
    return [TaskType("hello.count", tasks.count_tables, description="Count the tables of a database.")]
