// Radiologists prepare models: upload a study (files, a folder or a zip dropped on the
// page) in resumable chunks, convert it with a preset, follow the job's stages, and inspect
// the result (levels of detail with triangles and bytes, structures with thumbnails, the
// model itself) before a presenter loads it into a session.
import { create } from "@bufbuild/protobuf";
import {
  CreateStudyRequestSchema,
  GetUploadRequestSchema,
  JobState,
  ListModelsRequestSchema,
  StartConversionRequestSchema,
  StartUploadRequestSchema,
  UploadChunkRequestSchema,
  WatchJobRequestSchema,
} from "./gen/holo/v1/asset_pb.js";
import { sceneOnly } from "./glb.js";
import { fetchModel } from "./model.js";
import { backoffMs, retryable, say, sleep } from "./rpc.js";
import { $, el, formatBytes, setStatus, sha256Hex, showManifest } from "./ui.js";

const PRESETS = [
  ["bone", "Bone (CT)"],
  ["soft_tissue", "Soft tissue (CT)"],
  ["skin", "Skin surface (CT)"],
];
const STAGES = [
  ["read", "Reading the images"],
  ["segment", "Finding the bone"],
  ["mesh", "Building surfaces"],
  ["decimate", "Levels of detail"],
  ["write", "Writing the model"],
];
const STATE_NAMES = {
  [JobState.QUEUED]: "waiting for a free worker",
  [JobState.RUNNING]: "running",
  [JobState.SUCCEEDED]: "done",
  [JobState.FAILED]: "failed",
  [JobState.CANCELLED]: "cancelled",
};

export function startPrepare(clients, viewer, holo) {
  const pane = $("#prepare");
  pane.hidden = false;
  holo.prepare = { uploaded: 0, jobs: [], models: [] };
  const files = el("input", { type: "file", id: "files", multiple: true, accept: ".zip,.dcm,application/zip,application/dicom" });
  const folder = el("input", { type: "file", id: "folder" });
  folder.webkitdirectory = true;
  const drop = el("div", { className: "drop", id: "drop" },
    el("p", {}, "Drop a study here: a folder of DICOM files or a zip."),
    el("label", { className: "row" }, "Files ", files),
    el("label", { className: "row" }, "Folder ", folder));
  const progress = el("progress", { id: "upload-progress", max: 1, value: 0, hidden: true });
  const uploadNote = el("p", { id: "upload-note" });
  const study = el("div", { id: "study" });
  const preset = el("select", { id: "preset" }, ...PRESETS.map(([value, text]) => el("option", { value }, text)));
  const convert = el("button", { type: "button", id: "convert", disabled: true }, "Convert");
  const stages = el("ul", { className: "stages", id: "stages" });
  const jobNote = el("p", { id: "job-note" });
  const models = el("ul", { className: "notes", id: "models" });
  const thumbs = el("div", { className: "thumbs", id: "thumbs" });
  pane.append(
    el("h2", {}, "1. Upload a study"), drop, progress, uploadNote,
    el("h2", {}, "2. Convert"), study, el("label", { className: "row" }, "Preset ", preset), convert, stages, jobNote,
    el("h2", {}, "3. Inspect"), thumbs, el("h2", {}, "Models of this case"), models,
  );

  let current = null; // the study made from the last upload
  const take = (list) => upload([...list]).catch((err) => fail(err));
  files.addEventListener("change", () => take(files.files));
  folder.addEventListener("change", () => take(folder.files));
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    dropped(e.dataTransfer).then(take, fail);
  });
  convert.addEventListener("click", () => startJob().catch(fail));

  function fail(err) {
    const text = say(err);
    setStatus(text, "error");
    holo.errors.push(text);
  }

  async function upload(list) {
    const chosen = list.filter((f) => f.size > 0 && !f.name.startsWith("."));
    if (!chosen.length) return setStatus("No files to upload", "error");
    const total = chosen.reduce((n, f) => n + f.size, 0);
    let sent = 0;
    progress.hidden = false;
    convert.disabled = true;
    const ids = [];
    for (const [n, file] of chosen.entries()) {
      uploadNote.textContent = `Uploading ${n + 1} of ${chosen.length} (${formatBytes(total)} in all)…`;
      const done = await uploadFile(file, (bytes) => {
        progress.value = (sent + bytes) / total;
      });
      sent += file.size;
      ids.push({ value: done.uploadId.value });
    }
    uploadNote.textContent = "Reading the study…";
    current = await clients.uploads.createStudy(create(CreateStudyRequestSchema, { uploads: ids }));
    holo.prepare.uploaded = sent;
    uploadNote.textContent = `Uploaded ${chosen.length} file(s), ${formatBytes(total)}.`;
    showStudy(current);
    convert.disabled = false;
    setStatus("Study uploaded: choose a preset and convert", "ok");
  }

  async function uploadFile(file, onBytes) {
    const data = new Uint8Array(await file.arrayBuffer());
    const sha256 = await sha256Hex(data);
    // The same file again (a reload, a retry) resumes where the server stands.
    let status = await clients.uploads.startUpload(create(StartUploadRequestSchema, { name: file.name, sizeBytes: BigInt(file.size), sha256 }));
    const chunk = status.maxChunkBytes || 1 << 20;
    for (let failures = 0; !status.complete; ) {
      const offset = Number(status.offset);
      onBytes(offset);
      try {
        status = await clients.uploads.uploadChunk(create(UploadChunkRequestSchema, { uploadId: status.uploadId, offset: BigInt(offset), data: data.subarray(offset, offset + chunk) }));
        failures = 0;
      } catch (err) {
        if (!retryable(err) || ++failures > 20) throw err;
        await sleep(backoffMs(failures));
        status = await clients.uploads.getUpload(create(GetUploadRequestSchema, { uploadId: status.uploadId })).catch(() => status);
      }
    }
    onBytes(file.size);
    return status;
  }

  function showStudy(s) {
    study.replaceChildren(
      el("p", {}, `${s.studyDescription || "Study"}: ${s.series.length} series, ${formatBytes(Number(s.sizeBytes))}`),
      el("table", { className: "lods" },
        el("tr", {}, el("th", {}, "Series"), el("th", {}, "Kind"), el("th", {}, "Images")),
        ...s.series.map((x) => el("tr", {}, el("td", {}, x.seriesDescription || x.modality), el("td", {}, x.kind), el("td", {}, String(x.images))))),
    );
    const radiograph = s.series.length && s.series.every((x) => x.kind !== "ct_volume" && x.modality !== "CT");
    preset.disabled = radiograph;
  }

  async function startJob() {
    if (!current) return;
    convert.disabled = true;
    let job = await clients.conversions.startConversion(create(StartConversionRequestSchema, { studyId: current.studyId, preset: preset.value }));
    holo.prepare.jobs.push(job.jobId.value);
    for (let failures = 0; ; ) {
      try {
        for await (job of clients.conversions.watchJob(create(WatchJobRequestSchema, { jobId: job.jobId }))) showJob(job);
        break;
      } catch (err) {
        if (!retryable(err) || ++failures > 20) throw err;
        await sleep(1000);
      }
    }
    convert.disabled = false;
    if (job.state !== JobState.SUCCEEDED) {
      jobNote.textContent = `The conversion ${STATE_NAMES[job.state] ?? "stopped"}: ${job.message}`;
      setStatus(jobNote.textContent, "error");
      return;
    }
    jobNote.textContent = "Done: the model is ready. Check it below before a presenter loads it.";
    await refreshModels();
    await inspect(job.modelId.value);
  }

  function showJob(job) {
    const at = STAGES.findIndex(([name]) => name === job.stage);
    const finished = job.state === JobState.SUCCEEDED;
    stages.replaceChildren(...STAGES.map(([name, text], i) => {
      const state = finished || i < at ? "done" : i === at ? `${Math.round(100 * job.fraction)} %` : "";
      return el("li", {}, el("span", {}, text), el("span", { className: "role" }, state));
    }));
    jobNote.textContent = `Conversion ${STATE_NAMES[job.state] ?? ""}${job.message ? `: ${job.message}` : ""}`;
    setStatus(jobNote.textContent, job.state === JobState.FAILED ? "error" : "wait");
  }

  async function refreshModels() {
    const reply = await clients.assets.listModels(create(ListModelsRequestSchema, {}));
    holo.prepare.models = reply.models.map((m) => m.modelId.value);
    models.replaceChildren(...reply.models.map((m) => {
      const open = el("button", { type: "button", className: "small" }, "Inspect");
      open.addEventListener("click", () => inspect(m.modelId.value).catch(fail));
      const when = new Date(Number(m.createdUnixNs / 1000000n)).toLocaleString();
      return el("li", {}, el("span", {}, `${m.preset} model, ${m.structures.length} structures, ${formatBytes(Number(m.sizeBytes))}, ${when}`), open);
    }));
  }

  async function inspect(modelId) {
    for (const id of [...viewer.models.keys()]) viewer.removeModel(id);
    viewer.framed = false;
    thumbs.replaceChildren();
    const { manifest } = await fetchModel(clients.assets, modelId, {
      onManifest: (m) => showManifest(m),
      onLod: async (index, lod, glb) => {
        await viewer.showLod(modelId, index, sceneOnly(glb, lod.name));
        holo.lods.push({ modelId, index, triangles: Number(lod.triangles) });
        holo.modelsShown.set(modelId, index);
        $("#lod-shown").textContent = `Showing ${lod.name} (${Number(lod.triangles).toLocaleString("en")} triangles)`;
      },
    });
    thumbs.replaceChildren(...viewer.thumbnails(modelId).map(({ name, url }) => el("figure", {}, el("img", { src: url, alt: `${name}` }), el("figcaption", {}, name))));
    viewer.frame();
    viewer.requestRender();
    setStatus(`Model ready: ${manifest.structures.length} structures`, "ok");
  }

  refreshModels().then(() => setStatus("Ready: upload a study", "ok"), fail);
}

/** The files of a drop: folders walked (webkitGetAsEntry), files as they are. */
async function dropped(transfer) {
  const entries = [...transfer.items].map((item) => item.webkitGetAsEntry?.()).filter(Boolean);
  if (!entries.length) return [...transfer.files];
  const out = [];
  async function walk(entry) {
    if (entry.isFile) out.push(await new Promise((resolve, reject) => entry.file(resolve, reject)));
    else {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        for (const child of batch) await walk(child);
      }
    }
  }
  for (const entry of entries) await walk(entry);
  return out;
}
