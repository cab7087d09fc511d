// The session made visible: a HoloModelView per loaded model, placed at its anchor pose in
// the room; markers, labels and strokes on their models; other participants' live drags,
// pointers and heads. Driven by HoloSession's callbacks (main thread).
//
// The room frame is the presenter's tracking space (OpenXR stage; WebXR local-floor in the
// page): `room` is the Transform whose local space is this device's tracking space, the
// XR Origin's Camera Offset with a floor tracking origin. Anchor poses (model -> room),
// head poses and rays arrive in the glTF convention and go through Core/Frames.cs, the one
// conversion, into local transforms under `room`. Annotation points are in their model's
// frame, so they become children of the model's GameObject at Frames.ToUnity(point). A
// model the wearer holds (HoloGrab: Hold, Unhold) stays where the hand puts it.
//
// NOT COMPILED HERE: needs UnityEngine.
using System.Collections.Generic;
using Holo.Bridge.Core;
using UnityEngine;
// UnityEngine has a Pose and a Ray too: these are the core's (glTF convention, doubles).
using Pose = Holo.Bridge.Core.Pose;
using Ray = Holo.Bridge.Core.Ray;

namespace Holo.Bridge
{
    public sealed class HoloSceneSync : MonoBehaviour
    {
        public HoloSession session;
        public HoloConnection connection;
        [Tooltip("This device's tracking space: the XR Origin's Camera Offset (floor origin).")]
        public Transform room;
        [Tooltip("Shown at each marker (a 6 mm sphere when empty).")]
        public GameObject markerPrefab;
        [Tooltip("Triangle budget of the whole scene, shared by its models; 0: by device class.")]
        public long triangleBudget;
        [Tooltip("Metres a pointer ray is drawn.")]
        public float pointerLength = 2f;

        readonly Dictionary<string, HoloModelView> models = new Dictionary<string, HoloModelView>();
        readonly Dictionary<string, GameObject> annotations = new Dictionary<string, GameObject>();
        readonly Dictionary<string, Transform> heads = new Dictionary<string, Transform>();
        readonly Dictionary<string, LineRenderer> pointers = new Dictionary<string, LineRenderer>();
        readonly Dictionary<string, long> dragAt = new Dictionary<string, long>(); // model -> t_ns of the drag shown
        readonly HashSet<string> held = new HashSet<string>();

        public IDictionary<string, HoloModelView> Models { get { return models; } }

        /// <summary>The wearer holds the model (HoloGrab): its place is the hand's until
        /// <see cref="Unhold"/>; neither its committed anchor nor a drag moves it (the page's
        /// holding(), holo/web/src/immersive.js).</summary>
        public void Hold(string modelId) { held.Add(modelId); }

        public bool IsHeld(string modelId) { return held.Contains(modelId); }

        /// <summary>The wearer let go (and the commit, if any, is folded): the model goes to
        /// its committed anchor.</summary>
        public void Unhold(string modelId)
        {
            held.Remove(modelId);
            HoloModelView view;
            SceneModel model = session.State.Models.Get(modelId);
            if (model != null && models.TryGetValue(modelId, out view)) Place(view.transform, model.AnchorPose);
        }

        void OnEnable()
        {
            if (session == null) session = GetComponent<HoloSession>();
            if (connection == null) connection = GetComponent<HoloConnection>();
            if (room == null) room = transform;
            session.StateChanged += Apply;
            session.EphemeralReceived += Take;
        }

        void OnDisable()
        {
            session.StateChanged -= Apply;
            session.EphemeralReceived -= Take;
        }

        /// <summary>A Unity pose under `room` from a glTF-convention pose.</summary>
        public static void Place(Transform t, Pose gltf)
        {
            Pose unity = Frames.ToUnity(gltf);
            t.localPosition = ToVector(unity.Position);
            t.localRotation = new Quaternion((float)unity.Rotation.X, (float)unity.Rotation.Y, (float)unity.Rotation.Z, (float)unity.Rotation.W);
        }

        static Vector3 ToVector(Vec3 v) { return new Vector3((float)v.X, (float)v.Y, (float)v.Z); }

        void Apply(SessionState state)
        {
            // Models: one view each, at its committed anchor (a newer live drag keeps its place).
            foreach (SceneModel model in state.Models.Values)
            {
                HoloModelView view;
                if (!models.TryGetValue(model.ModelId, out view))
                {
                    var go = new GameObject("holo model " + model.ModelId);
                    go.transform.SetParent(room, false);
                    go.SetActive(false); // configured before its Start runs
                    view = go.AddComponent<HoloModelView>();
                    view.connection = connection;
                    view.modelId = model.ModelId;
                    long scene = triangleBudget > 0 ? triangleBudget : DeviceBudget.ForThisDevice();
                    view.triangleBudget = ModelAssembler.ShareOfScene(scene, state.Models.Count);
                    go.SetActive(true);
                    models[model.ModelId] = view;
                }
                dragAt.Remove(model.ModelId);
                if (!held.Contains(model.ModelId)) Place(view.transform, model.AnchorPose);
            }
            foreach (string gone in new List<string>(models.Keys))
            {
                if (state.Models.ContainsKey(gone)) continue;
                Destroy(models[gone].gameObject);
                models.Remove(gone);
                held.Remove(gone);
            }
            // Annotations: markers, labels and strokes in their model's frame.
            foreach (Annotation a in state.Annotations.Values)
            {
                HoloModelView view;
                if (annotations.ContainsKey(a.AnnotationId) || !models.TryGetValue(a.ModelId, out view)) continue;
                annotations[a.AnnotationId] = Draw(a, view.transform);
            }
            foreach (string gone in new List<string>(annotations.Keys))
            {
                if (state.Annotations.ContainsKey(gone)) continue;
                Destroy(annotations[gone]);
                annotations.Remove(gone);
            }
            // Participants who left take their head and pointer with them.
            foreach (string pid in new List<string>(heads.Keys))
            {
                if (state.Participants.ContainsKey(pid)) continue;
                Destroy(heads[pid].gameObject);
                heads.Remove(pid);
            }
            foreach (string pid in new List<string>(pointers.Keys))
            {
                if (state.Participants.ContainsKey(pid)) continue;
                Destroy(pointers[pid].gameObject);
                pointers.Remove(pid);
            }
        }

        GameObject Draw(Annotation a, Transform model)
        {
            var root = new GameObject(a.Shape + " " + a.AnnotationId);
            root.transform.SetParent(model, false);
            if (a.Shape == Shapes.Stroke)
            {
                var line = root.AddComponent<LineRenderer>();
                line.useWorldSpace = false;
                line.widthMultiplier = 0.002f;
                line.positionCount = a.Points.Count;
                for (int k = 0; k < a.Points.Count; k++) line.SetPosition(k, ToVector(Frames.ToUnity(a.Points[k])));
                return root;
            }
            root.transform.localPosition = ToVector(Frames.ToUnity(a.Points[0]));
            GameObject marker = markerPrefab != null ? Instantiate(markerPrefab) : GameObject.CreatePrimitive(PrimitiveType.Sphere);
            marker.transform.SetParent(root.transform, false);
            if (markerPrefab == null)
            {
                marker.transform.localScale = Vector3.one * 0.006f;
                Destroy(marker.GetComponent<Collider>()); // pointers aim at the model, not at markers
            }
            if (a.Shape == Shapes.Label)
            {
                var text = new GameObject("text").AddComponent<TextMesh>();
                text.transform.SetParent(root.transform, false);
                text.transform.localPosition = new Vector3(0, 0.01f, 0);
                text.characterSize = 0.005f;
                text.fontSize = 48;
                text.anchor = TextAnchor.LowerCenter;
                text.text = a.Text;
            }
            return root;
        }

        void Take(EphemeralUpdate update)
        {
            if (update.ParticipantId == session.ParticipantId) return; // our own, echoed
            if (update.Channel == Channels.Drag && update.Drag != null)
            {
                HoloModelView view;
                SceneModel committed = session.State.Models.Get(update.Drag.ModelId);
                long shownAt;
                if (!models.TryGetValue(update.Drag.ModelId, out view) || held.Contains(update.Drag.ModelId)) return;
                if (dragAt.TryGetValue(update.Drag.ModelId, out shownAt) && update.TNs < shownAt) return;
                if (committed != null && committed.TNs > 0 && update.TNs <= committed.TNs) return; // older than the commit
                dragAt[update.Drag.ModelId] = update.TNs;
                Place(view.transform, update.Drag.AnchorPose);
            }
            else if (update.Channel == Channels.HeadPose)
            {
                Transform head;
                if (!heads.TryGetValue(update.ParticipantId, out head))
                {
                    GameObject gizmo = GameObject.CreatePrimitive(PrimitiveType.Cube);
                    gizmo.name = "head " + update.ParticipantId;
                    Destroy(gizmo.GetComponent<Collider>());
                    gizmo.transform.SetParent(room, false);
                    gizmo.transform.localScale = new Vector3(0.16f, 0.1f, 0.12f);
                    head = gizmo.transform;
                    heads[update.ParticipantId] = head;
                }
                Place(head, update.HeadPose);
            }
            else if (update.Channel == Channels.Pointer)
            {
                LineRenderer line;
                if (!pointers.TryGetValue(update.ParticipantId, out line))
                {
                    var go = new GameObject("pointer " + update.ParticipantId);
                    go.transform.SetParent(room, false);
                    line = go.AddComponent<LineRenderer>();
                    line.useWorldSpace = false;
                    line.widthMultiplier = 0.003f;
                    line.positionCount = 2;
                    pointers[update.ParticipantId] = line;
                }
                Ray ray = Frames.ToUnity(update.Pointer);
                Vector3 origin = ToVector(ray.Origin), direction = ToVector(ray.Direction).normalized;
                line.SetPosition(0, origin);
                line.SetPosition(1, origin + direction * pointerLength);
            }
        }
    }
}
