// Radiologists: upload a study, convert it, inspect the result before presenters see it.
import { setStatus } from "./ui.js";

export function startPrepare(_clients, _viewer, _holo) {
  document.querySelector("#prepare").hidden = false;
  setStatus("Ready", "ok");
}
