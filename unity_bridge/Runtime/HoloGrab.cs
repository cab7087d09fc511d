// Grab, move, let go, in a headset: the participant in control selects a model with an XR
// Interaction Toolkit interactor (the trigger on a ray, a grip or pinch on a near
// interactor), moves the hand, and lets go where the model belongs (docs/headsets.md,
// "Input"; the web page does the same in holo/web/src/immersive.js).
//
// What decides is the core, tested there: Core/AnchorGrab.cs keeps the model where it sat
// on the hand (anchor = hand * inverse(hand at grab) * anchor at grab) and says when a move
// is more than tracking noise (1 mm, 0.2 degrees); Core/Pacer.cs sends those moves as
// Drag, at most 30 a second and one at a time, the newest winning. On release the pacer
// settles (the drag waiting is dropped and the one in flight is awaited) before
// CommitAnchor goes, so no drag arrives after the commit and pulls the model back. A
// model grabbed and let go without moving commits nothing.
//
// Frames: the interactor's attach transform (where it holds: the ray's hit point for a ray
// interactor, the hand for a near one) and the model's transform are read relative to the
// scene's `room` (the models' parent) and converted to the glTF convention once
// (HoloPacedSender.InRoom, Core/Frames.cs); the core works in glTF, as the wire does; the
// model is shown through HoloSceneSync.Place, the same conversion back. While held,
// HoloSceneSync leaves the model where the hand puts it (Hold / Unhold), until the commit
// is folded into the state.
//
// Interactables: each model gets an XRSimpleInteractable, which selects and moves nothing
// itself (an XRGrabInteractable would move the transform on its own; here the anchor is
// the core's). It selects through the model's colliders, which arrive with each level
// (HoloModelView adds none; the sample's addColliders gives the meshes MeshColliders):
// its collider list is refreshed when they change, while it is not selected.
//
// Control: only the participant in control grabs (the session state's controller is this
// participant; the server checks again). Losing control while holding drops the grab: no
// commit, and the model goes back to its committed anchor (the control event puts it back
// for everyone else too). A hand that is lost (the selection cancelled, the interactor
// destroyed) or this component disabled lets go: the model is committed where it is.
//
// NOT COMPILED HERE: needs UnityEngine and the XR Interaction Toolkit (2.x, or 3.x where
// HOLO_XRI_3 is defined by the assembly definition's version define).
using System;
using System.Collections.Generic;
using System.Threading.Tasks;
using Holo.Bridge.Core;
using UnityEngine;
using UnityEngine.XR.Interaction.Toolkit;
#if HOLO_XRI_3
using UnityEngine.XR.Interaction.Toolkit.Interactables;
using UnityEngine.XR.Interaction.Toolkit.Interactors;
#endif
// UnityEngine has a Pose too: this is the core's (glTF convention, doubles).
using Pose = Holo.Bridge.Core.Pose;

namespace Holo.Bridge
{
    public sealed class HoloGrab : MonoBehaviour
    {
        public HoloSession session;
        [Tooltip("Shows the models; its room (the XR Origin's Camera Offset) is the room frame here too.")]
        public HoloSceneSync scene;
        [Tooltip("Drags per second at most (30: the session's limit for headsets).")]
        public float maxRateHz = 30f;

        // How often the models' colliders are looked at (levels arrive seconds apart).
        const float RefreshS = 0.25f;

        readonly Dictionary<HoloModelView, XRSimpleInteractable> handles = new Dictionary<HoloModelView, XRSimpleInteractable>();
        readonly List<Collider> found = new List<Collider>();
        // No still filter here: AnchorGrab.Move says what moved.
        readonly Pacer<Pose> drags = new Pacer<Pose>(30);
        AnchorGrab grab;
        IXRSelectInteractor hand;
        Transform attach;
        HoloModelView held;
        Task dragging = Task.CompletedTask;
        bool committing;
        string settling; // committed: held until the state has folded seq settlingSeq
        long settlingSeq;
        float refreshAt;
        bool warned;

        /// <summary>The model held now (null: none).</summary>
        public string HeldModelId { get { return grab != null ? grab.ModelId : null; } }

        void Update()
        {
            if (session == null || scene == null) return;
            if (Time.unscaledTime >= refreshAt)
            {
                refreshAt = Time.unscaledTime + RefreshS;
                Refresh();
            }
            if (settling != null && session.State.Seq >= settlingSeq)
            {
                if (HeldModelId != settling) scene.Unhold(settling);
                settling = null;
            }
            if (grab == null) return;
            if (!session.InControl || held == null)
            {
                Drop();
                return;
            }
            if (attach == null)
            {
                Release(); // the interactor is gone: let go where the model is, as a lost controller does on the page
                return;
            }
            Pose handNow = HoloPacedSender.InRoom(scene.room, attach.position, attach.rotation);
            if (grab.Move(handNow))
            {
                HoloSceneSync.Place(held.transform, grab.Anchor);
                drags.Offer(grab.Anchor);
            }
            drags.MaxPerSecond = maxRateHz;
            Pose anchor;
            if (drags.TryTake(Time.unscaledTimeAsDouble, out anchor)) dragging = Drag(grab.ModelId, anchor);
        }

        void OnDisable()
        {
            if (grab != null) Release(); // as the page does when the headset session ends
        }

        /// <summary>An XRSimpleInteractable on each model, its colliders those of the model now.</summary>
        void Refresh()
        {
            var gone = new List<HoloModelView>();
            foreach (HoloModelView view in handles.Keys) if (view == null) gone.Add(view);
            foreach (HoloModelView view in gone) handles.Remove(view);
            foreach (HoloModelView view in scene.Models.Values)
            {
                XRSimpleInteractable handle;
                if (!handles.TryGetValue(view, out handle))
                {
                    handle = view.gameObject.AddComponent<XRSimpleInteractable>();
                    handle.selectEntered.AddListener(Grabbed);
                    handle.selectExited.AddListener(Released);
                    handles[view] = handle;
                }
                if (handle.isSelected) continue;
                view.GetComponentsInChildren(found);
                if (Same(handle.colliders, found)) continue;
                // The interaction manager maps colliders to interactables when one registers
                // (OnEnable): register again with the new list.
                handle.enabled = false;
                handle.colliders.Clear();
                handle.colliders.AddRange(found);
                handle.enabled = true;
            }
        }

        static bool Same(List<Collider> a, List<Collider> b)
        {
            if (a.Count != b.Count) return false;
            for (int k = 0; k < a.Count; k++) if (a[k] != b[k]) return false;
            return true;
        }

        void Grabbed(SelectEnterEventArgs args)
        {
            if (grab != null || committing || session == null || !session.InControl) return;
            HoloModelView view = args.interactableObject.transform.GetComponent<HoloModelView>();
            if (view == null || session.State.Models.Get(view.modelId) == null) return;
            Transform at = args.interactorObject.GetAttachTransform(args.interactableObject);
            Pose handAtGrab = HoloPacedSender.InRoom(scene.room, at.position, at.rotation);
            // From where the wearer sees it (a committed anchor, or someone's last drag).
            Pose anchorAtGrab = HoloPacedSender.InRoom(scene.room, view.transform.position, view.transform.rotation);
            grab = new AnchorGrab(view.modelId, handAtGrab, anchorAtGrab);
            hand = args.interactorObject;
            attach = at;
            held = view;
            scene.Hold(view.modelId);
            if (settling == view.modelId) settling = null; // this grab holds it now
        }

        void Released(SelectExitEventArgs args)
        {
            // A cancelled selection (the hand lost, the interactor disabled) lets go too.
            if (grab != null && args.interactorObject == hand) Release();
        }

        void Release()
        {
            AnchorGrab ended = grab;
            Forget();
            Pose? commit = ended.Release();
            drags.Settle();
            if (commit.HasValue) Commit(ended.ModelId, commit.Value);
            else scene.Unhold(ended.ModelId); // grabbed and let go in place: nothing to commit
        }

        /// <summary>Lets go without committing (control lost, the model unloaded).</summary>
        void Drop()
        {
            string modelId = grab.ModelId;
            grab.Release();
            Forget();
            drags.Settle();
            scene.Unhold(modelId);
        }

        void Forget()
        {
            grab = null;
            hand = null;
            attach = null;
            held = null;
        }

        async Task Drag(string modelId, Pose anchor)
        {
            try
            {
                await session.Drag(modelId, anchor);
            }
            catch (Exception e)
            {
                Warn(e); // the next drag, or the commit, replaces it
            }
            finally
            {
                drags.Done();
            }
        }

        async void Commit(string modelId, Pose anchor)
        {
            committing = true;
            try
            {
                await dragging; // the drag in flight lands before the commit (Drag never throws)
                settlingSeq = await session.CommitAnchor(modelId, anchor);
                settling = modelId;
            }
            catch (Exception e)
            {
                Debug.LogWarning("holo: the model could not be placed: " + e.Message);
                scene.Unhold(modelId);
            }
            finally
            {
                committing = false;
            }
        }

        void Warn(Exception e)
        {
            if (!warned) Debug.LogWarning("holo: " + e.Message);
            warned = true;
        }
    }
}
