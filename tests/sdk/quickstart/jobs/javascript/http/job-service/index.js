// The jobs quickstart's service, in its shape: an HTTP app on APP_PORT
// whose job handler is `POST /job/<name>`; the job's data is the body.
import http from "node:http";

const port = process.env.APP_PORT || "6200";

http
  .createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      if (req.method !== "POST" || !req.url.startsWith("/job/")) {
        res.writeHead(404).end();
        return;
      }
      console.log("Received job request...");
      try {
        const [droid, task] = JSON.parse(body).value.split(":");
        console.log("Starting droid:", droid);
        console.log("Executing maintenance job:", task);
        res.writeHead(200).end();
      } catch (e) {
        console.log("Error processing job:", e.message);
        res.writeHead(400).end();
      }
    });
  })
  .listen(port, () => console.log(`Server started on port ${port}`));
