// Python syntax highlighting through the vendored highlight.js core, which escapes the code it
// is given: the result is safe to show although the code is the model's.

import hljs from "../vendor/highlight-core.min.js";
import python from "../vendor/highlight-python.min.js";

hljs.registerLanguage("python", python);

export function highlighted(code) {
  const block = document.createElement("code");
  block.className = "language-python";
  block.textContent = code;
  hljs.highlightElement(block);
  const pre = document.createElement("pre");
  pre.className = "code";
  pre.append(block);
  return pre;
}
