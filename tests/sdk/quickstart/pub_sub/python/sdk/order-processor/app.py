# A plain Flask subscriber, as in Dapr's pub/sub quickstart: it knows
# nothing of tandem; the sidecar reads /dapr/subscribe and posts events.
import json
import os

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.route("/dapr/subscribe", methods=["GET"])
def subscribe():
    return jsonify([{"pubsubname": "orderpubsub", "topic": "orders", "route": "orders"}])


@app.route("/orders", methods=["POST"])
def orders_subscriber():
    event = request.json
    print("Subscriber received : " + json.dumps(event["data"]), flush=True)
    return json.dumps({"success": True}), 200, {"ContentType": "application/json"}


app.run(port=int(os.environ.get("APP_PORT", "6002")))
