// Reads the JSON body on stdin; prints it back with what the build (`npm install`) left in /tool.
const fs = require("fs");

const body = JSON.parse(fs.readFileSync(0, "utf8") || "null");
console.log(
  JSON.stringify({
    body,
    node: process.version,
    installed: fs.readFileSync("installed.txt", "utf8"),
    lockfile: fs.existsSync("package-lock.json"),
  }),
);
